"""DG406, the label audit from the data alone: each case's annotation of each label against
the same label in the other cases.

Per case and label, `label_stats.label_figures` gives volume, components, stray pieces, position
relative to the other labels, intensity inside, contrast across the outline, the image's
edges on the outline and missing slices. Each figure becomes a robust z-score against the
same label in the other cases (median and 1.4826 x MAD, the spread floored so that a
dataset drawn very alike does not turn noise into suspects); a label that most cases have
and this case lacks is a suspect of its own. A (case, label)'s score is its largest z, its
reasons the figures behind the two largest, in words.

Reading is bounded as DG314's is: image channel 0 and the label on a strided grid of at
most MAX_VOXELS voxels (`volume_read.py`), no link followed. The figures are per-file facts
of the image (`check_audit_case`, the scan's `audit-case` check): the grid is kept while the
raw-image check inflates the image anyway, so the audit decodes no image twice, and the
image's context holds its label's size and mtime, so either file changing computes them
again. The volume comes from the label's own full-resolution voxel counts. A rescan, the
report, the TUI and `dataguard audit` read nothing: they rank the recorded figures
(`recorded_figures`); a view whose scan left DG406 out is read case by case instead
(`case_figures`).
"""
from __future__ import annotations

import math
import os

from ..findings import Finding, Severity, finding
from ..spec import clip, parse_spec
from ..suspects import Suspect, ranked
from .label_stats import label_figures
from .mirroring import MAX_VOXELS, _training_pairs
from .volume_read import read_strided, strided_from

MIN_CASES = 8          # cases holding a label before it is compared at all (fewer: no robust spread)
ABSENT_MIN = 10        # cases holding a label before its absence from another case is a suspect
INFO_AT = 4.0          # score from which a suspect is a DG406 finding (info)
WARN_AT = 8.0          # ... a warning, when a second figure also stands out (>= INFO_AT)
MAX_FINDINGS = 10      # DG406 findings per dataset (the ranking has them all: dataguard audit)
ABSENT_SHARE = 0.8     # a label missing from a case that this share of the others has
ABSENT_SCORE = 6.0
Z_CAP = 50.0

# figure -> (how it is compared, floor of the spread): "two" both ways, "high" only above,
# "low" only below the others; floors are in the figure's own unit
FIGURES = {
    "log_volume": ("two", 0.15),
    "stray": ("high", 0.02),
    "stray_mm": ("high", 5.0),
    "inside": ("two", 0.03),
    "contrast": ("two", 0.03),
    "edge": ("low", 0.1),
    "gaps": ("high", 0.5),
}
OFFSET_FLOOR_MM = 4.0


def robust(values: list[float], floor: float) -> tuple[float, float]:
    """(median, spread) with spread = max(1.4826 x MAD, floor)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med))) * 1.4826
    return med, max(mad, floor)


def zscores(figs: dict[str, dict[int, dict]]) -> dict[tuple[str, int], dict[str, float]]:
    """{(case, label): {figure: z}} for every label held by at least MIN_CASES cases; z >= 0,
    its direction folded in by FIGURES (a figure only suspicious one way gives 0 the other)."""
    import numpy as np

    by_label: dict[int, dict[str, dict]] = {}
    for case, labels in figs.items():
        for lab, f in labels.items():
            by_label.setdefault(lab, {})[case] = f
    out: dict[tuple[str, int], dict[str, float]] = {}
    for lab, cases in by_label.items():
        if len(cases) < MIN_CASES:
            continue
        for name, (way, floor) in FIGURES.items():
            vals = {c: _value(f, name) for c, f in cases.items()}
            vals = {c: x for c, x in vals.items() if x is not None and math.isfinite(x)}
            if len(vals) < MIN_CASES:
                continue
            med, spread = robust(list(vals.values()), floor)
            for c, x in vals.items():
                z = (x - med) / spread
                z = abs(z) if way == "two" else max(z, 0.0) if way == "high" else max(-z, 0.0)
                out.setdefault((c, lab), {})[name] = min(z, Z_CAP)
        offs = {c: f["offset"] for c, f in cases.items() if f.get("offset") is not None}
        if len(offs) >= MIN_CASES:
            arr = np.asarray(list(offs.values()), dtype=np.float64)
            centre = np.median(arr, axis=0)
            d = np.linalg.norm(arr - centre, axis=1)
            spread = max(1.4826 * float(np.median(d)), OFFSET_FLOOR_MM)
            for c, dist in zip(offs, d):
                out.setdefault((c, lab), {})["offset"] = min(float(dist) / spread, Z_CAP)
    return out


def _value(f: dict, name: str):
    if name == "log_volume":
        return math.log(f["volume"]) if f.get("volume", 0) > 0 else None
    return f.get(name)


def _reason(name: str, f: dict, others: dict) -> str:
    """One figure of a (case, label) in words, beside the other cases' median."""
    med = others.get(name)
    if name == "log_volume":
        ratio = f["volume"] / math.exp(med) if med is not None else float("nan")
        return f"volume {f['volume'] / 1000:.3g} ml, {ratio:.2g}x the others' median"
    if name == "offset":
        return f"{others.get('offset_mm', 0):.0f} mm from where the others put it beside the other labels"
    if name == "stray":
        return f"{f['stray'] * 100:.0f}% of it lies outside its largest piece ({f['components']} pieces)"
    if name == "stray_mm":
        return f"a separate piece {f['stray_mm']:.0f} mm from the rest"
    if name == "inside":
        return f"intensity inside unlike the others' ({f['inside']:+.2f} vs {med:+.2f})"
    if name == "contrast":
        return f"outline does not follow the image (contrast {f['contrast']:+.2f} vs {med:+.2f})"
    if name == "edge":
        return f"outline off the image's edges (edge {f['edge']:.2f} vs {med:.2f})"
    if name == "gaps":
        at = f" (first at slice {f['gap_at']})" if f.get("gap_at") is not None else ""
        return f"{f['gaps']} empty slice(s) inside its extent{at}"
    return name


def suspects(figs: dict[str, dict[int, dict]], names: dict[int, str]) -> list[Suspect]:
    """Every (case, label) compared, scored and explained; plus labels absent from a case
    that most other cases have. Ranked, most suspect first."""
    import numpy as np

    z = zscores(figs)
    medians: dict[int, dict[str, float]] = {}
    by_label: dict[int, list[dict]] = {}
    for labels in figs.values():
        for lab, f in labels.items():
            by_label.setdefault(lab, []).append(f)
    for lab, fs in by_label.items():
        medians[lab] = {n: float(np.median([x for x in (_value(f, n) for f in fs) if x is not None] or [0.0]))
                        for n in FIGURES}
    out = []
    for (case, lab), zs in z.items():
        f = figs[case][lab]
        top = sorted(zs.items(), key=lambda kv: -kv[1])
        score = top[0][1] if top else 0.0
        others = dict(medians[lab])
        if "offset" in zs:
            offs = np.asarray([g["offset"] for g in by_label[lab]], dtype=np.float64)
            others["offset_mm"] = float(np.linalg.norm(np.asarray(f["offset"]) - np.median(offs, axis=0)))
        reasons = [_reason(n, f, others) for n, v in top[:2] if v >= 2.0]
        at = f.get("gap_at") if top and top[0][0] == "gaps" else f.get("slice")
        out.append(Suspect(case, lab, names.get(lab, str(lab)), float(score), "data", reasons, at,
                           {"z": {k: round(v, 2) for k, v in zs.items()}}))
    n_cases = len(figs)
    for lab, fs in by_label.items():
        have = len(fs)
        if n_cases - have == 0 or have < ABSENT_MIN or have < ABSENT_SHARE * (n_cases - 1):
            continue
        for case, labels in figs.items():
            if lab not in labels and labels:
                out.append(Suspect(case, lab, names.get(lab, str(lab)), ABSENT_SCORE, "data",
                                   [f"not annotated in this case; {have} of the other {n_cases - 1} cases have it"],
                                   None, {"absent": True}))
    return ranked(out)


def findings_of(found: list[Suspect], dataset: str = "DATASET", where: str = "raw/labelsTr") -> list[Finding]:
    """DG406 for the suspects from INFO_AT (at most MAX_FINDINGS), warning when far out."""
    out = []
    hits = [s for s in found if s.score >= INFO_AT]
    for s in hits[:MAX_FINDINGS]:
        zs = sorted((s.figures.get("z") or {}).values(), reverse=True)
        strong = s.score >= WARN_AT and (len(zs) >= 2 and zs[1] >= INFO_AT or s.figures.get("absent"))
        why = "; ".join(s.reasons) or "unlike the other cases"
        at = f", slice {s.slice}" if s.slice is not None else ""
        out.append(finding("DG406", where, f"{s.case}: label '{clip(s.name)}' ({s.label}) looks unlike the same "
                                           f"label in the other cases (score {s.score:.1f}{at}): {why}",
                           case=s.case, severity=Severity.WARNING if strong else Severity.INFO,
                           help=f"look at it; the ranking: dataguard audit -d {dataset}"))
    if len(hits) > MAX_FINDINGS:
        out.append(finding("DG406", where, f"{len(hits) - MAX_FINDINGS} more suspect annotation(s) from score "
                                           f"{INFO_AT:g}; dataguard audit lists them all", severity=Severity.INFO))
    return out


# --- reading the dataset ---------------------------------------------------------------------
THREADS = 8            # cases read at once (ISA-L inflate and numpy release the GIL); each holds
                       # at most 2 x MAX_VOXELS voxels (image and label on the strided grid)


def case_figures(view) -> dict[str, dict[int, dict]]:
    """{case: {label: figures}} for the raw training cases whose channel 0 and label the scan
    read (same shape), each read bounded on a strided grid; cases on a thread pool (one per
    core, at most THREADS)."""
    spec = parse_spec(view.meta or {})
    pairs = _training_pairs(view, spec.ending)
    view.raw_cases()                  # built once, before the threads read it
    jobs = min(THREADS, os.cpu_count() or 1, len(pairs))
    if jobs > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(jobs, thread_name_prefix="dataguard-audit") as ex:
            got = list(ex.map(lambda p: _one_case(view, spec, *p), pairs))
    else:
        got = [_one_case(view, spec, *p) for p in pairs]
    return {case: figs for (case, *_), figs in zip(pairs, got) if figs is not None}


def _one_case(view, spec, case: str, img_path: str, lab_path: str, img_rel: str) -> dict[int, dict] | None:
    """One case's figures per label; None when its files cannot be read (the raw-image
    check's findings say why)."""
    lab_rel = next((t.rel for t in view.raw_cases().get(case, []) if t.kind == "label"), None)
    facts_l = view.results[lab_rel].facts if lab_rel in view.results else {}
    facts_i = view.results[img_rel].facts
    try:
        label, s = read_strided(lab_path, MAX_VOXELS)
        image, _ = read_strided(img_path, MAX_VOXELS, s)
    except Exception:  # noqa: BLE001 - unreadable files are the raw-image check's findings
        return None
    sp_xyz = list(facts_i.get("spacing") or [1.0, 1.0, 1.0])[:3]
    sp_xyz += [1.0] * (3 - len(sp_xyz))
    full = [float(sp_xyz[2]), float(sp_xyz[1]), float(sp_xyz[0])]
    counts = {int(k): int(v) for k, v in (facts_l.get("label_voxels") or {}).items()
              if str(k).lstrip("-").isdigit() and int(k) > 0}
    labels = sorted(v for v in counts if v != spec.ignore_label) or None
    figs = grid_figures(image, label, s, full, labels, counts or None)
    return {k: v for k, v in figs.items() if k != spec.ignore_label}


def grid_figures(image, label, stride: int, spacing_zyx, labels=None, voxels=None) -> dict[int, dict]:
    """label_figures of a case read on a strided grid, its slices numbered as the case's own:
    what the scan's audit-case check records and a case read again computes, the same way
    (the body's range from the grid itself). A float label is compared as its nearest
    integers (DG401 reports it)."""
    import numpy as np

    if label.dtype.kind == "f":
        label = np.rint(np.nan_to_num(label)).astype(np.int32)
    figs = label_figures(image, label, [x * stride for x in spacing_zyx], labels, voxels,
                         spacing_zyx if voxels else None)
    for f in figs.values():
        f["slice"] = f["slice"] * stride
        if f.get("gap_at") is not None:
            f["gap_at"] = f["gap_at"] * stride
    return figs


FIGURES_VERSION = 1     # of the per-file facts "audit" (a change re-reads every training case)


def check_audit_case(task, src, scratch: dict | None) -> tuple[list, dict]:
    """Facts `audit` of a raw training image's channel 0 and its label (`task.pair`): the
    figures of each label on the strided grid, slices in the case's own numbering; the
    volume is made full-resolution later from the label's own voxel counts. No findings:
    the dataset check compares cases. The image's grid comes from the raw-image check that
    streamed it just before (`scratch`), else from one strided read of the open file."""
    import json
    import os

    if task.kind != "image" or task.where != "raw" or not task.pair:
        return [], {}
    lab_rel = json.loads(task.pair)[0]
    got = (scratch or {}).get("strided")
    try:
        if got is None:
            image, s, zyx = strided_from(src, MAX_VOXELS)
        else:
            image, s, xyz = got
            xyz = list(xyz) + [1.0] * (3 - len(xyz))
            zyx = [xyz[2], xyz[1], xyz[0]]
        # the label beside the image (raw/labelsTr/...), no link followed (read_strided)
        root = os.path.dirname(os.path.dirname(task.path))
        label, _ = read_strided(os.path.join(root, *lab_rel.split("/")[1:]), MAX_VOXELS, s)
    except Exception as e:  # noqa: BLE001 - the raw-image check reports unreadable files
        return [], {"audit": {"v": FIGURES_VERSION, "skipped": f"not read: {str(e)[:120]}"}}
    if label.shape != image.shape:
        return [], {"audit": {"v": FIGURES_VERSION, "skipped": "the label's grid is not the image's (DG304)"}}
    figs = grid_figures(image, label, s, zyx)
    return [], {"audit": {"v": FIGURES_VERSION, "label": lab_rel, "spacing": zyx,
                          "figures": {str(k): v for k, v in figs.items()}}}


def recorded_figures(view) -> dict[str, dict[int, dict]] | None:
    """{case: {label: figures}} from the scan's per-file facts (nothing read); None when the
    scan did not compute them (a view from a scan that left DG406 out)."""
    spec = parse_spec(view.meta or {})
    out: dict[str, dict[int, dict]] = {}
    seen = False
    labels_of = {t.case: t.rel for t in view.tasks if t.kind == "label" and t.where == "raw"
                 and t.rel.startswith("raw/labelsTr/")}
    for t in view.tasks:
        if t.kind != "image" or t.where != "raw" or not t.rel.startswith("raw/imagesTr/"):
            continue
        r = view.results.get(t.rel)
        a = (r.facts or {}).get("audit") if r is not None else None
        if not isinstance(a, dict) or a.get("v") != FIGURES_VERSION:
            continue
        seen = True
        if "figures" not in a or labels_of.get(t.case) != a.get("label"):
            continue
        lr = view.results.get(labels_of[t.case])
        counts = (lr.facts or {}).get("label_voxels") if lr is not None else None
        voxel = math.prod(float(x) for x in a.get("spacing") or [1.0])
        figs = {}
        for k, f in a["figures"].items():
            v = int(k)
            if v == spec.ignore_label:
                continue
            f = dict(f)
            if isinstance(counts, dict) and isinstance(counts.get(str(v), counts.get(v)), int):
                f["volume"] = float(counts.get(str(v), counts.get(v)) * voxel)   # full resolution
            figs[v] = f
        out[t.case] = figs
    return out if seen else None


def audit_view(view) -> list[Suspect]:
    """The ranked data-alone suspects of one scanned dataset view."""
    spec = parse_spec(view.meta or {})
    names = {v: k for k, v in spec.labels.items() if isinstance(v, int)}
    if not view.has_raw or not view.raw_root:
        return []
    figs = recorded_figures(view)
    return suspects(case_figures(view) if figs is None else figs, names)


def check_label_audit(view) -> list[Finding]:
    """DG406 over a raw dataset's training cases (the scan's dataset check)."""
    return findings_of(audit_view(view), view.name)
