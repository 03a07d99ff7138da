"""Everything the report shows, asked of the Workspace and the log reader: plain dicts for
the template. Each section is None when its data does not exist."""
from __future__ import annotations

import json
import random
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataguardError, LogError
from ..findings import Severity, catalogue
from ..fsio import blake3_file
from .images import case_thumbnail, file_uri, intensity_strip, pred_vs_ref, suspect_picture


@dataclass
class Report:
    title: str
    generated: str
    datasets: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    findings: list[dict] = field(default_factory=list)
    codes: dict = field(default_factory=dict)           # code -> explain text
    cases: list[dict] = field(default_factory=list)
    folds: list[dict] = field(default_factory=list)
    training: list[dict] = field(default_factory=list)
    cv: list[dict] = field(default_factory=list)
    submissions: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    environment: dict = field(default_factory=dict)     # `dataguard doctor`: versions, memory, DG9xx findings
    consistency: list[dict] = field(default_factory=list)   # orientation, intensity, test spacing per raw dataset
    roundtrip: list[dict] = field(default_factory=list)     # DG405: configuration x label round-trip Dice
    suspects: list[dict] = field(default_factory=list)      # DG406: the label audit from the data alone

    def sections(self) -> list[str]:
        """The sections the page shows, in the words `dataguard report` prints on stderr."""
        return [name for name, have in (
            ("summary", True), ("findings", self.findings), ("cases", self.cases),
            ("consistency", self.consistency), ("round trip", self.roundtrip),
            ("suspect labels", self.suspects), ("folds", self.folds), ("training", self.training),
            ("cross-validation", self.cv), ("submissions", self.submissions),
            ("environment", self.environment)) if have]


def collect(ws, *, n_clean: int = 6, images: bool = True, submissions_dirs: list[Path] = (),
            worst: int = 3, on_step=None, surface: float | None = None) -> Report:

    step = on_step or (lambda what: None)
    step("scanning (incremental)")
    result = ws.scan()
    rep = Report(title=", ".join(d.name for d in ws.datasets), generated=time.strftime("%Y-%m-%d %H:%M"))
    _, _, when = ws.recorded()
    cases = ws.cases()
    cat = catalogue()
    rep.codes = {c: {"what": i.what, "fix": i.fix_text, "severity": i.severity_text} for c, i in cat.items()}
    for d in ws.datasets:
        mine = [f for f in result.findings if f.dataset == d.name]
        n_test = len({c.case for c in cases if c.dataset == d.name and c.test})
        n_train = len({c.case for c in cases if c.dataset == d.name and not c.test})
        rep.datasets.append({"name": d.name, "raw": str(d.raw or ""), "preprocessed": str(d.preprocessed or ""),
                             "cases": n_train, "test_images": n_test,
                             "errors": sum(f.severity >= Severity.ERROR for f in mine),
                             "warnings": sum(f.severity == Severity.WARNING for f in mine)})
    by_code: dict[str, dict] = {}
    for f in result.findings:
        e = by_code.setdefault(f.code, {"code": f.code, "severity": str(f.severity), "count": 0})
        e["count"] += 1
    errors = sum(f.severity >= Severity.ERROR for f in result.findings)
    rep.summary = {"scanned": time.strftime("%Y-%m-%d %H:%M", time.localtime(when)) if when else "now",
                   "cases": len({(c.dataset, c.case) for c in cases if not c.test}),          # training cases
                   "test_images": len({(c.dataset, c.case) for c in cases if c.test}), "errors": errors,
                   "warnings": sum(f.severity == Severity.WARNING for f in result.findings),
                   "infos": sum(f.severity == Severity.INFO for f in result.findings),
                   "by_code": sorted(by_code.values(), key=lambda e: (-Severity.parse(e["severity"]), e["code"])),
                   "verdict": "ready to train" if not errors else
                   f"{errors} error{'s' * (errors != 1)} block training"}
    rep.findings = [{**f.to_dict(), "explain": rep.codes.get(f.code, {}).get("what", "")}
                    for f in sorted(result.findings, key=lambda f: (-int(f.severity), f.code, f.case or "", f.path))]
    step("cases")
    rep.cases = _cases(ws, cases, n_clean, images)
    step("consistency")
    for d in ws.datasets:
        rep.consistency += _consistency(ws, d.name, images)
    step("round trip")
    for d in ws.datasets:
        rep.roundtrip += _roundtrip(ws, d.name)
    step("suspect labels")
    for d in ws.datasets:
        rep.suspects += _suspects(ws, d.name, images)
    step("folds")
    for d in ws.datasets:
        if d.preprocessed is not None:
            rep.folds.append(_folds(ws, d.name))
    step("training logs")
    for d in ws.datasets:
        rep.training += _training(ws, d.name, rep.notes)
    step("cross-validation")
    for d in ws.datasets:
        with ws.dataset(d.name).nnunet_env():       # a project folder without the env vars: its own
            cv = _cv(ws, d.name, images, worst, rep.notes, surface)
        if cv:
            rep.cv.append(cv)
    step("submissions")
    rep.submissions = _submissions(submissions_dirs)
    step("environment")
    rep.environment = _environment(ws)
    rep.folds = [f for f in rep.folds if f]
    return rep


def _consistency(ws, dataset: str, images: bool) -> list[dict]:
    """The consistency section of one dataset: orientation table, intensity strip, test spacing."""
    s = ws.dataset(dataset).consistency()
    if not s:
        return []
    codes = ("DG307", "DG308", "DG309", "DG310")
    found = [f.to_dict() for f in (ws.last.findings if ws.last else []) if f.dataset == dataset and f.code in codes]
    orient = sorted(({"codes": k, "n": len(v), "cases": v if k != s["majority"] else []}
                     for k, v in s["orientation"].items()), key=lambda r: -r["n"])
    return [{"dataset": dataset, "majority": s["majority"], "orientation": orient,
             "strip": intensity_strip(s) if images else None, "training_spacing": s["training_spacing"],
             "test_spacing": s["test_spacing"], "findings": found}]


def _roundtrip(ws, dataset: str) -> list[dict]:
    """DG405's table of one dataset: a row per label, a column per configuration."""
    rows = ws.dataset(dataset).roundtrip()
    confs = list(dict.fromkeys(r["configuration"] for r in rows))
    if not confs:
        return []
    labels: dict[int, dict] = {}
    for r in rows:
        if "refused" in r:
            continue
        lab = labels.setdefault(r["label"], {"label": r["label"], "name": r["name"], "cells": {}})
        lab["cells"][r["configuration"]] = r
    refused = {r["configuration"]: r["refused"] for r in rows if "refused" in r}
    spacing = {r["configuration"]: r.get("spacing") for r in rows if r.get("spacing")}
    found = [f.to_dict() for f in (ws.last.findings if ws.last else []) if f.dataset == dataset and f.code == "DG405"]
    return [{"dataset": dataset, "configs": confs, "spacing": spacing, "refused": refused,
             "labels": [labels[k] for k in sorted(labels)], "findings": found}]


SUSPECTS_SHOWN = 8      # rows of the suspect labels section per dataset


def _suspects(ws, dataset: str, images: bool) -> list[dict]:
    """The label audit of one raw dataset, from the data alone: the suspects the audit makes
    DG406 findings of (score from DG406's threshold; at most SUSPECTS_SHOWN), each with its
    slice and the label's outline; none stands out: how many (case, label) pairs were compared."""
    h = ws.dataset(dataset)
    if h.raw is None:
        return []
    try:
        data, _, found = h.audit()
    except Exception as e:                                     # noqa: BLE001 - a section that says why
        return [{"dataset": dataset, "error": f"{type(e).__name__}: {e}", "rows": [], "compared": 0}]
    # DG406 names the top suspects in rank order, one finding each (the last, without a case,
    # counts the rest): as many rows as it names are the ones at or above its threshold
    flagged = sum(1 for f in found if f.code == "DG406" and f.case)
    rows = []
    for s in data[:min(flagged, SUSPECTS_SHOWN)]:
        pic, why = (_suspect_picture(h, s) if images else (None, "pictures off (--no-images)"))
        rows.append({"case": s.case, "label": s.label, "name": s.name, "score": s.score,
                     "reasons": s.reasons or ["unlike the other cases"], "slice": s.slice,
                     "absent": bool(s.figures.get("absent")), "picture": pic, "no_picture": why})
    return [{"dataset": dataset, "rows": rows, "more": flagged - len(rows),
             "top_score": data[0].score if data else None, "compared": sum(1 for s in data if not s.figures.get("absent")),
             "cases": len({s.case for s in data}),
             "findings": [f.to_dict() for f in found if f.code == "DG406" and not f.case]}]


def _suspect_picture(h, s) -> tuple[str | None, str | None]:
    """(picture, None) or (None, why): the suspect's axis-0 slice (the middle one for a label
    the case lacks) with that label's outline over channel 0."""
    try:
        image, label = h.load_slice(s.case, axis=0, index=s.slice, source="raw")
    except Exception as e:                                     # noqa: BLE001 - no picture, still a row
        return None, str(e)
    spacing = None
    try:
        facts = h.case(s.case).facts.get("raw")
        if facts is not None and facts.spacing and len(facts.spacing) == 3:
            spacing = tuple(facts.spacing[1:])
    except Exception:                                          # noqa: BLE001 - square pixels then
        pass
    return suspect_picture(image, label, s.label, spacing), None


def _environment(ws) -> dict:
    """The doctor's report as the template shows it: versions, devices, memory, DG9xx findings."""
    try:
        d = ws.doctor().to_dict()
    except Exception as e:  # noqa: BLE001 - the page is still worth having without this section
        return {"error": f"{type(e).__name__}: {e}"}
    m = d["memory"]
    gb = (lambda n: "?" if n is None else f"{n / (1 << 30):.1f} GB")
    rows = [("RAM", f"{gb(m['available'])} available of {gb(m['total'])}"),
            ("/dev/shm", f"{gb(m['shm_free'])} free of {gb(m['shm_total'])}"
             + (f" ({m['container']} container)" if m["container"] else "")),
            ("GPUs", ", ".join(g["name"] for g in d["devices"]["gpus"]) or "none found"),
            ("CPUs", str(m["cpus"]))]
    return {"versions": d["versions"], "rows": rows, "findings": d["findings"]}


def _cases(ws, cases, n_clean: int, images: bool) -> list[dict]:

    seen, flagged, clean = set(), [], []
    for c in cases:
        key = (c.dataset, c.case)
        if key in seen or c.case.startswith(".") or c.case.endswith(".json"):
            continue
        seen.add(key)
        (flagged if c.status in ("error", "warning") else clean).append(c)
    rng = random.Random(0)
    sample = sorted(rng.sample(clean, min(n_clean, len(clean))), key=lambda c: (c.dataset, c.case))
    out = []
    for c in flagged + sample:
        labels = c.labels or {}
        thumb, why = case_thumbnail(ws, c.dataset, c.case, c) if images else (None, "pictures off (--no-images)")
        out.append({"dataset": c.dataset, "case": c.case, "status": c.status,
                    "codes": sorted({f.code for f in c.findings}),
                    "messages": [f"{f.code}: {f.message}" for f in c.findings][:4],
                    "labels": {str(k): int(v) for k, v in sorted(labels.items())},
                    "test": bool(c.test), "thumb": thumb, "no_thumb": why})
    return out


def _folds(ws, dataset: str) -> dict | None:
    try:
        ctx, splits, table, note = ws.dataset(dataset).splits.folds_view()
    except Exception as e:                                         # noqa: BLE001
        return {"dataset": dataset, "error": f"{type(e).__name__}: {e}"}
    if table is None:
        return {"dataset": dataset, "note": note, "rows": [], "labels": [], "findings": []}
    folds = sorted(set(table["fold"]))
    names = list(dict.fromkeys(table["name"]))
    rows = []
    for k in folds:
        sub = table[table["fold"] == k]
        cells = []
        for n in names:
            r = sub[sub["name"] == n].iloc[0]
            cells.append({"val": int(r["val"]), "n_val": int(r["n_val"]), "train": int(r["train"]),
                          "n_train": int(r["n_train"]),
                          "share": (int(r["val"]) / int(r["n_val"])) if int(r["n_val"]) else 0.0})
        rows.append({"fold": int(k), "cells": cells})
    return {"dataset": dataset, "note": note, "labels": names, "rows": rows,
            "findings": [f.to_dict() for f in ctx.findings]}


def _training(ws, dataset: str, notes: list[str]) -> list[dict]:
    import tempfile

    h = ws.dataset(dataset)
    if h.results is None:
        root, why = h.results_root()
        if root is None:       # nowhere to look: say so, never a page that just lacks the sections
            notes.append(f"training and cross-validation of {dataset} not shown: {why}")
        return []
    try:
        runs = ws.train.runs(h.results)
    except LogError:
        return []
    out = []
    by_trainer: dict[str, list] = {}
    for r in runs:
        by_trainer.setdefault(Path(r.log).parent.parent.name, []).append(r)
    verdicts = h.train.throughput_verdicts()
    for trainer, rs in sorted(by_trainer.items()):
        with tempfile.TemporaryDirectory() as d:
            uri = file_uri(ws.train.plot(rs, Path(d) / "runs.png"))
        config = trainer.rsplit("__", 1)[-1]
        out.append({"dataset": dataset, "trainer": trainer, "plot": uri,
                    "runs": [{**r.to_dict(), "fold": Path(r.log).parent.name} for r in rs],
                    "throughput": [v for v in verdicts if v["configuration"] == config]})
    return out


def _cv(ws, dataset: str, images: bool, worst: int, notes: list[str], surface: float | None = None) -> dict | None:
    """Per model the per-label Dice table (and with `surface`, the surface metrics at that
    NSD tolerance in mm), and the worst cases."""

    if ws.dataset(dataset).results_root()[0] is None:
        return None                                   # nowhere to look: _training said so
    why = _no_cv(ws, dataset)
    if why is None:
        try:
            h = ws.dataset(dataset).evaluate
            ev = h.run(metrics=h.SURFACE_METRICS if surface else (), tolerance=surface)
        except DataguardError as e:
            why = str(e)
    if why is not None:
        notes.append(f"cross-validation of {dataset} not shown: {why}")
        return None
    if not ev.scores:
        return None
    models = []
    for m in ev.models():
        folds = ev.folds(m)
        rows = []
        for lab, name in ev.labels.items():
            per_fold = [ev.per_label(m, k)[lab] for k in folds]
            rows.append({"label": name, "folds": per_fold, "all": ev.per_label(m)[lab]})
        models.append({"model": m, "folds": folds, "rows": rows})
    worst_rows = []
    for lab, rows in ev.worst(worst).items():
        for s in rows:
            worst_rows.append({"label": ev.labels[lab], "case": s.case, "model": s.model, "fold": s.fold,
                               "dice": s.dice, "ref": s.ref_voxels, "pred": s.pred_voxels, "surface": s.surface,
                               "thumb": _pred_thumb(ws, ev, s) if images else None})
    return {"dataset": dataset, "models": models, "worst": worst_rows, "surface": surface,
            "findings": [f.to_dict() for f in ev.findings]}


def _no_cv(ws, dataset: str) -> str | None:
    """Why a dataset has no cross-validation yet, in the words of what to do next (None: it
    may have one), so the page never shows an errno for the usual first-day state."""
    try:
        ws.dataset(dataset).evaluate.models()
    except DataguardError:
        return (f"no trained models under $nnUNet_results/{dataset} yet (run `dataguard train {dataset} "
                f"CONFIG FOLD` for each fold)")
    pre = ws.dataset(dataset).preprocessed
    if pre is not None and not (Path(pre) / "splits_final.json").exists():
        return (f"no splits_final.json in $nnUNet_preprocessed/{dataset}: nnU-Net writes it at the first "
                f"training, and without it no prediction can be called 'validation'")
    return None


def _pred_thumb(ws, ev, s) -> str | None:
    """Reference | prediction on the slice where the reference has most of that label."""
    import nibabel as nib
    import numpy as np


    try:
        ds = ws.dataset(ev.dataset)
        src = next(x for x in ev.sources if x.model == s.model and x.fold == s.fold)
        ref = np.asanyarray(nib.load(str(Path(ds.preprocessed) / "gt_segmentations" / f"{s.case}.nii.gz")).dataobj).T
        pred = np.asanyarray(nib.load(str(src.folder / f"{s.case}.nii.gz")).dataobj).T
        img_path = Path(ds.raw) / "imagesTr" / f"{s.case}_0000.nii.gz"
        img_nii = nib.load(str(img_path))
        image = np.asanyarray(img_nii.dataobj).T.astype(np.float32)
        z = int(np.argmax((ref == s.label).reshape(ref.shape[0], -1).sum(1)))
        zooms = img_nii.header.get_zooms()
        return pred_vs_ref(image[z], ref[z].astype(np.int64), pred[z].astype(np.int64), (zooms[1], zooms[0]))
    except Exception:                                             # noqa: BLE001 - no picture, still a row
        return None


def _submissions(dirs) -> list[dict]:
    import blake3


    out = []
    seen = set()
    for d in dirs:
        for man in sorted(Path(d).glob("*.zip.manifest.json")):
            if man.resolve() in seen:
                continue
            seen.add(man.resolve())
            try:
                doc = json.loads(man.read_text("utf-8"))
            except (OSError, ValueError) as e:
                out.append({"manifest": str(man), "error": f"unreadable: {e}"})
                continue
            z = man.with_name(man.name[: -len(".manifest.json")])
            status, problems = "re-verifies", []
            if not z.is_file():
                status = "archive missing"
            else:
                if blake3_file(z) != doc.get("archive_blake3"):
                    problems.append("archive blake3 differs from the manifest")
                try:
                    with zipfile.ZipFile(z) as zf:
                        for name, want in (doc.get("cases") or {}).items():
                            got = blake3.blake3(zf.read(name)).hexdigest()
                            if got != want:
                                problems.append(f"{name}: blake3 differs")
                except (zipfile.BadZipFile, KeyError, OSError) as e:
                    problems.append(f"unreadable: {e}")
                if problems:
                    status = "CHANGED since it was written"
            out.append({"manifest": str(man), "archive": z.name, "created": doc.get("created"),
                        "cases": len(doc.get("cases") or {}), "models": doc.get("models") or [],
                        "weights": json.dumps(doc["weights"]) if (doc.get("weights") or {}).get("labels")
                        or (doc.get("weights") or {}).get("default") else None,
                        "postprocess": doc.get("postprocess"), "versions": doc.get("versions") or {},
                        "training": doc.get("training_data"), "status": status, "problems": problems[:5]})
    return out
