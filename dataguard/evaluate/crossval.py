"""Honest cross-validation per label: Dice per case, fold and label, against gt_segmentations.

A label absent from the reference is not a Dice of 0: it is "absent" when the prediction is
empty too, and a false-positive volume otherwise; means are taken over the cases that have
the label, and each fold says how many of its validation cases do. The case set of every
"validation" folder must be exactly its fold's validation cases (DG802, a registered check
over the `Evaluation` this module builds).

One pass per case: the reference and the prediction are read once (threads: gzip and
numpy release the GIL) and a single `bincount` over `ref * K + pred` gives every label's
true positives and both volumes.

Regions and the ignore label are scored as nnU-Net's `compute_metrics` does: a region is the
set of voxels whose value is any of its labels (in the reference and in the prediction,
which nnU-Net writes with `regions_class_order`), and voxels the reference marks `ignore`
count nowhere: neither as reference, nor as prediction, nor as error.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..fsio import read_json
from ..submit.archive import run_checks
from ..submit.predictions import PRED_ENDING
from ..visual import label_colour
from .surface import DEFAULT_TOLERANCE, METRICS, SURFACE_DEFINITIONS, surface_metrics


@dataclass
class CaseScore:
    model: str
    fold: int
    case: str
    label: int
    dice: float | None              # None: the reference lacks the label
    ref_voxels: int
    pred_voxels: int
    surface: dict | None = None     # surface.Surface.to_dict() when surface metrics were asked for

    @property
    def status(self) -> str:
        if self.ref_voxels:
            return "scored"
        return "absent" if not self.pred_voxels else "false positive"


@dataclass
class FoldSource:
    """One folder of predictions evaluated as the validation of one fold."""
    model: str
    fold: int
    folder: Path
    expected: list[str]                         # the fold's validation cases (splits_final.json)
    train: set[str] = field(default_factory=set)
    other_val: dict[str, int] = field(default_factory=dict)      # case -> the fold that validates it
    found: list[str] = field(default_factory=list)               # cases with a prediction here


@dataclass
class Evaluation:
    dataset: str
    labels: dict[int, str]                       # scored classes: label value (or region position) -> name
    sources: list[FoldSource] = field(default_factory=list)
    scores: list[CaseScore] = field(default_factory=list)
    findings: list = field(default_factory=list)
    values: dict[int, tuple[int, ...]] = field(default_factory=dict)   # class -> the label values it is
    ignore: int | None = None                    # the reference value nnU-Net masks out
    used: list[str] = field(default_factory=list)    # per model: the folds used, those skipped and why
    metrics: tuple[str, ...] = ()                # surface metrics computed besides Dice (surface.METRICS)
    tolerance: dict[int, float] = field(default_factory=dict)    # class -> NSD tolerance, mm

    def models(self) -> list[str]:
        return list(dict.fromkeys(s.model for s in self.sources))

    def per_label(self, model: str, fold: int | None = None) -> dict[int, dict]:
        """{label: {"mean_dice", "cases_with_label", "cases", "false_positives"}}."""
        out = {}
        rows = [s for s in self.scores if s.model == model and (fold is None or s.fold == fold)]
        n_cases = len({(s.fold, s.case) for s in rows})
        for lab in self.labels:
            mine = [s for s in rows if s.label == lab]
            scored = [s.dice for s in mine if s.dice is not None]
            out[lab] = {"mean_dice": sum(scored) / len(scored) if scored else None,
                        "cases_with_label": len(scored), "cases": n_cases,
                        "false_positives": sum(1 for s in mine if s.status == "false positive")}
            if self.metrics:
                out[lab].update(surface_summary([s.surface for s in mine if s.dice is not None and s.surface],
                                                self.metrics))
        return out

    def folds(self, model: str) -> list[int]:
        return sorted({s.fold for s in self.sources if s.model == model})

    def worst(self, n: int) -> dict[int, list[CaseScore]]:
        """Per label, the n cases with the lowest Dice (worst_cases)."""
        return worst_cases(self, n)

    def plot(self, path: Path) -> Path:
        """Per-label Dice per fold and model as a PNG (matplotlib)."""
        return plot(self, path)

    def to_dict(self) -> dict:
        return {"models": [{"model": m, "labels": {self.labels[lab]: v for lab, v in self.per_label(m).items()},
                            "folds": {str(k): {self.labels[lab]: v for lab, v in self.per_label(m, k).items()}
                                      for k in self.folds(m)}} for m in self.models()],
                "cases": [{"model": s.model, "fold": s.fold, "case": s.case, "label": self.labels[s.label],
                           "dice": s.dice, "ref_voxels": s.ref_voxels, "pred_voxels": s.pred_voxels,
                           **({"surface": s.surface} if s.surface is not None else {})}
                          for s in self.scores],
                **({"surface_metrics": {"metrics": list(self.metrics),
                                        "tolerance_mm": {self.labels[k]: v for k, v in self.tolerance.items()},
                                        "definitions": SURFACE_DEFINITIONS}} if self.metrics else {}),
                "findings": [f.to_dict() for f in self.findings]}


def read_labels(path: Path, with_spacing: bool = False):
    """A label map as an integer array (nibabel; the voxel order only has to match its pair);
    with `with_spacing`, (array, voxel size in mm in the array's axis order)."""
    import nibabel as nib
    import numpy as np

    img = nib.load(str(path))
    arr = np.asanyarray(img.dataobj)
    if arr.dtype.kind == "f":
        arr = np.rint(arr)
    arr = arr.astype(np.int64, copy=False)
    if not with_spacing:
        return arr
    zooms = [float(z) for z in img.header.get_zooms()[: arr.ndim]]
    return arr, zooms + [1.0] * (arr.ndim - len(zooms))


def overlap(ref, pred, labels, ignore: int | None = None) -> dict[int, tuple[int, int, int]]:
    """(true positives, reference voxels, predicted voxels) per class, from one bincount of
    `ref * K + pred` (non-negative integer label arrays of one shape).

    labels: a list of label values, or {class: label values} (a region is the union of its
    values). Voxels whose reference is `ignore` are left out of every count, as nnU-Net does."""
    import numpy as np

    classes = labels if isinstance(labels, dict) else {lab: (lab,) for lab in labels}
    top = max((v for vs in classes.values() for v in vs), default=0)
    k = int(max(ref.max(initial=0), pred.max(initial=0), top, ignore or 0)) + 1
    joint = np.bincount((ref.ravel() * k + pred.ravel()), minlength=k * k).reshape(k, k)
    if ignore is not None:
        joint[ignore, :] = 0
    out = {}
    for key, vals in classes.items():
        idx = list(vals)
        out[key] = (int(joint[np.ix_(idx, idx)].sum()), int(joint[idx, :].sum()), int(joint[:, idx].sum()))
    return out


def score_case(ref_path: Path, pred_path: Path, labels, ignore: int | None = None,
               tolerance: dict | None = None) -> list[tuple]:
    """(class, dice or None, ref voxels, pred voxels, surface metrics or None) per class (see
    `overlap`). `tolerance` ({class: mm}): also the surface metrics (evaluate/surface.py) of
    each class, at the reference's voxel size, the reference's ignored voxels left out of
    both masks as Dice leaves them out."""
    ref, spacing = read_labels(ref_path, with_spacing=True)
    pred = read_labels(pred_path)
    if ref.shape != pred.shape:
        raise ValueError(f"shape {pred.shape} differs from the reference's {ref.shape}")
    counts = overlap(ref, pred, labels, ignore)
    out = []
    classes = labels if isinstance(labels, dict) else {lab: (lab,) for lab in labels}
    for lab, (tp, r, p) in counts.items():
        surf = None
        if tolerance is not None:
            surf = _surface_of(ref, pred, classes[lab], ignore, spacing, tolerance.get(lab, DEFAULT_TOLERANCE))
        out.append((lab, (2 * tp / (r + p)) if r else None, r, p, surf))
    return out


def _surface_of(ref, pred, values, ignore, spacing, tolerance: float) -> dict:
    import numpy as np

    vals = list(values)
    a = np.isin(ref, vals) if len(vals) > 1 else ref == vals[0]
    b = np.isin(pred, vals) if len(vals) > 1 else pred == vals[0]
    if ignore is not None:
        keep = ref != ignore
        a &= keep
        b &= keep
    return surface_metrics(a, b, spacing, tolerance).to_dict()


def surface_summary(rows: list[dict], metrics) -> dict:
    """Per label over its cases with a reference: each distance's mean over the cases where it
    is defined ("scored"), NSD's mean over all of them (0 where the prediction is empty), and
    how many predictions missed the label entirely (their distances are undefined)."""
    out: dict = {}
    for m in metrics:
        vals = [r[m] for r in rows if r.get(m) is not None and (m == "nsd" or r["status"] == "scored")]
        out[f"mean_{m}"] = sum(vals) / len(vals) if vals else None
    out["missed"] = sum(1 for r in rows if r["status"] == "prediction empty")
    return out


def foreground_labels(spec) -> dict[int, str]:
    """{class: name} of what nnU-Net scores (a DatasetSpec): foreground labels by value, or
    regions by position; no background, no ignore."""
    if spec.region_problems:
        raise UsageError("dataset.json's regions cannot be scored: " + "; ".join(spec.region_problems))
    if not spec.class_names:
        raise UsageError("dataset.json declares no foreground label: " + "; ".join(spec.problems or ("none",)))
    return spec.class_names


def fold_sources(model: str, folder_of: dict[int, Path], splits: list[dict]) -> list[FoldSource]:

    out = []
    for k, folder in sorted(folder_of.items()):
        if k >= len(splits):
            raise UsageError(f"model {model}: fold {k} is not in splits_final.json ({len(splits)} folds)")
        src = FoldSource(model, k, Path(folder), list(splits[k]["val"]), set(splits[k]["train"]))
        src.other_val = {c: i for i, s in enumerate(splits) if i != k for c in s["val"]}
        src.found = sorted(p.name[: -len(PRED_ENDING)] for p in Path(folder).glob(f"*{PRED_ENDING}"))
        out.append(src)
    return out


def evaluate(dataset: str, gt_dir: Path, labels: dict[int, str], sources: list[FoldSource], *,
             jobs: int | None = None, on_case=None, spec=None, metrics: tuple = (),
             tolerance: dict[int, float] | None = None) -> Evaluation:
    """Score every predicted case that has a reference, then judge the case sets (DG802).

    spec: the dataset's DatasetSpec, for regions and the ignore label (None: plain labels).
    metrics: surface metrics besides Dice (surface.METRICS), NSD at `tolerance` ({class: mm},
    DEFAULT_TOLERANCE for a class not named)."""
    values = {k: v for k, (_, v) in spec.classes.items() if k in labels} if spec is not None else {}
    values = {lab: values.get(lab, (lab,)) for lab in labels}
    ignore = spec.ignore_label if spec is not None else None
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UsageError(f"unknown metric {unknown[0]!r} (use {', '.join(METRICS)})")
    tol = {lab: float((tolerance or {}).get(lab, DEFAULT_TOLERANCE)) for lab in labels} if metrics else {}
    ev = Evaluation(dataset, labels, sources, values=values, ignore=ignore, metrics=tuple(metrics), tolerance=tol)
    work = [(s, c) for s in sources for c in s.found if (gt_dir / f"{c}{PRED_ENDING}").is_file()]

    def one(item):
        s, c = item
        return s, c, score_case(gt_dir / f"{c}{PRED_ENDING}", s.folder / f"{c}{PRED_ENDING}", values, ignore,
                                tol if metrics else None)

    with ThreadPoolExecutor(max_workers=jobs or 4) as pool:
        for s, c, rows in pool.map(one, work):
            for lab, dice, r, p, surf in rows:
                ev.scores.append(CaseScore(s.model, s.fold, c, lab, dice, r, p, surf))
            if on_case:
                on_case(c)
    ev.findings = run_checks(ev, "evaluation")
    return ev


def worst_cases(ev: Evaluation, n: int) -> dict[int, list[CaseScore]]:
    """Per label, the n scored cases furthest below that label's median Dice (in IQRs)."""
    import numpy as np

    out = {}
    for lab in ev.labels:
        rows = [s for s in ev.scores if s.label == lab and s.dice is not None]
        if not rows:
            continue
        d = np.array([s.dice for s in rows])
        med, iqr = float(np.median(d)), float(np.subtract(*np.percentile(d, [75, 25])))
        rows.sort(key=lambda s: ((s.dice - med) / (iqr or 1.0), s.case))
        out[lab] = rows[:n]
    return out


def splits_of(preprocessed: Path) -> list[dict]:
    p = Path(preprocessed) / "splits_final.json"
    try:
        return read_json(p)
    except FileNotFoundError:
        raise UsageError(f"no {p.name} in {p.parent} (nnU-Net writes it at the first training): without it "
                         f"no prediction can be called 'validation'") from None
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise UsageError(f"cannot read {p} ({why}): without it no prediction can be called 'validation'") from None


def plot(ev: Evaluation, path: Path) -> Path:
    """A fold x label heatmap per model (mean Dice; n with label) and a per-case strip plot,
    outliers (below Q1 - 1.5 IQR) marked and named."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure


    models = ev.models()
    fig = Figure(figsize=(11, 3.2 * len(models) + 0.5))
    FigureCanvasAgg(fig)
    labs = list(ev.labels)
    for i, m in enumerate(models):
        folds = ev.folds(m)
        ax = fig.add_subplot(len(models), 2, 2 * i + 1)
        grid = np.full((len(folds), len(labs)), np.nan)
        for r, k in enumerate(folds):
            per = ev.per_label(m, k)
            for c, lab in enumerate(labs):
                v = per[lab]["mean_dice"]
                grid[r, c] = np.nan if v is None else v
                txt = "n/a" if v is None else f"{v:.2f}"
                ax.text(c, r, f"{txt}\n{per[lab]['cases_with_label']}/{per[lab]['cases']}", ha="center",
                        va="center", fontsize=8)
        ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(labs)), [ev.labels[x] for x in labs], fontsize=8)
        ax.set_yticks(range(len(folds)), [f"fold {k}" for k in folds], fontsize=8)
        ax.set_title(f"{m}: mean Dice (cases with the label / cases)", fontsize=9)
        ax = fig.add_subplot(len(models), 2, 2 * i + 2)
        rng = np.random.default_rng(0)
        for c, lab in enumerate(labs):
            rows = [s for s in ev.scores if s.model == m and s.label == lab and s.dice is not None]
            if not rows:
                continue
            d = np.array([s.dice for s in rows])
            q1, q3 = np.percentile(d, [25, 75])
            low = q1 - 1.5 * (q3 - q1)
            x = c + rng.uniform(-0.15, 0.15, len(d))
            ax.scatter(x, d, s=12, color=[v / 255 for v in label_colour(lab)])
            for xx, s in zip(x, rows):
                if s.dice < low:
                    ax.scatter([xx], [s.dice], s=60, facecolors="none", edgecolors="black")
                    ax.annotate(s.case, (xx, s.dice), fontsize=7, xytext=(4, -3), textcoords="offset points")
        ax.set_xticks(range(len(labs)), [ev.labels[x] for x in labs], fontsize=8)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{m}: Dice per case (outliers circled)", fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path), format="png", dpi=90)
    return Path(path)
