"""Label audit, with models (DG805): where the out-of-fold predictions disagree with a case's
annotation of a label, confidently.

Every case of a cross-validation is predicted once by a model that never trained on it (the
`--npz` probabilities under `fold_K/validation`). Where those models, averaged, are sure of a
class and the annotation says another, either the models are wrong or the annotation is; over
a dataset, the annotations worth a second look rise to the top. Nothing here changes a label.

Per (case, label), three figures, each in [0, 1]:

- **doubt**: how much the models prefer another class over the annotated one, where they
  believe the annotation least: minus the mean of the lowest tenth of (p(label) - p(best other
  class)) over the annotation without its in-plane rim (where any annotator and any model may
  differ by a voxel), clipped to [0, 1]. Near 1 when the models are sure a sizeable part of
  the annotation is something else; 0 when they agree, and also when they merely do not know
  (uncertain models are no evidence against an annotation).
- **other**: the largest connected region (26-connectivity) inside the annotation where the
  models are confident (p >= 0.9) of another class, as a fraction of the annotation.
- **missed**: the largest connected region the models are confident is this label and the
  annotation gives another class (left unlabelled, or labelled as something else), as a
  fraction of the label's annotation plus that region; for a label the case does not annotate
  at all, 1 once the region is half the label's typical annotated volume in the dataset (or,
  on its own, `MIN_VOXELS`), in proportion below that.

Regions are measured after an in-plane opening (a 3 x 3 square per slice), so a one-voxel rim
where the boundary differs is not a "region"; for labels that are themselves thinner than that
(more than half of them would vanish), the regions are taken as they are. A fraction f counts
as f / (f + 0.05) (5% of a label: 0.5; 20%: 0.8) and the three combine as independent evidence:
score = 1 - (1 - doubt)(1 - other)(1 - missed). Memory: one label at a time, in its bounding box.
"""
from __future__ import annotations

import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import UsageError
from ..checks.resample import components
from ..evaluate.weights import OOF, SELECTION, _read_ref
from ..submit.ensemble import nnunet_meta, read_probabilities, writer_for
from ..submit.predictions import find_probabilities
from ..submit.trained import validation_checkpoint
from ..findings import Finding, Severity, finding
from ..suspects import Suspect, ranked

CONFIDENT = 0.9          # a class the averaged models give at least this is "confident"
SOFT_MIN = 0.1           # the soft minimum: the mean of this lowest fraction of the annotation
HALF = 0.05              # a region of this fraction of a label counts half
WHOLE = 0.5              # a region this fraction of a label's usual volume, where none is annotated: all of it
MIN_VOXELS = 256         # ... without a usual volume: a region this large
SAY_AT = 0.1             # a reason after the strongest is said from this strength on (a region: about 0.6%)
REPORT_AT = 0.5          # a DG805 finding from this score on
WARN_FRACTION = 0.2      # ... a warning when the confident region is at least this fraction of the label


# --- one case --------------------------------------------------------------------------------
def _class_mean(probabilities: list, c: int, box=()):
    """The models' mean probability of class c (float32), in `box`; nan counts 0, clipped to [0, 1]."""
    import numpy as np

    acc = None
    for a in probabilities:
        v = np.asarray(a[c][box], dtype=np.float32)
        acc = v.copy() if acc is None else acc + v
    acc /= np.float32(len(probabilities))
    np.nan_to_num(acc, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(acc, 0.0, 1.0, out=acc)


def _confident(probabilities: list, n_classes: int):
    """(highest mean probability, its class, second highest, its class) per voxel, one class at a time."""
    import numpy as np

    p1 = _class_mean(probabilities, 0)
    p2 = np.full(p1.shape, -1.0, dtype=np.float32)
    dt = np.uint8 if n_classes <= 256 else np.int32
    a1, a2 = np.zeros(p1.shape, dtype=dt), np.zeros(p1.shape, dtype=dt)
    for c in range(1, n_classes):
        pc = _class_mean(probabilities, c)
        first = pc > p1
        second = ~first & (pc > p2)
        p2[first], a2[first] = p1[first], a1[first]
        p2[second], a2[second] = pc[second], c
        p1[first], a1[first] = pc[first], c
    np.maximum(p2, 0.0, out=p2)
    return p1, a1, p2, a2


def _box(boxes: list, shape) -> tuple:
    """The union of bounding boxes (slices, or None), one voxel wider on each side."""
    boxes = [b for b in boxes if b is not None]
    return tuple(slice(max(0, min(b[d].start for b in boxes) - 1), min(shape[d], max(b[d].stop for b in boxes) + 1))
                 for d in range(len(shape)))


def _largest(mask):
    """(mask of the largest 26-connected region, its size) of a boolean array."""
    import numpy as np

    lab, n = components(mask)
    if n == 0:
        return None, 0
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    k = int(sizes.argmax())
    return lab == k, int(sizes[k])


def _in_plane(mask, op):
    """`mask` eroded (op &) or dilated (op |) by the 3 x 3 square in its last two axes, outside
    the array counting as background: scipy's binary_erosion / binary_dilation with that
    structure, as two separable passes of slices (half their time on these small boxes)."""
    import numpy as np

    p = np.zeros(mask.shape[:-2] + (mask.shape[-2] + 2, mask.shape[-1] + 2), dtype=bool)
    p[..., 1:-1, 1:-1] = mask          # (np.pad's own overhead is most of the cost on small boxes)
    r = op(op(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    return op(op(r[..., :-2, :], r[..., 1:-1, :]), r[..., 2:, :])


def _opened(mask):
    """Binary opening by the in-plane 3 x 3 square (scipy's binary_opening with it)."""
    import operator

    return _in_plane(_in_plane(mask, operator.and_), operator.or_)


def _rim_removed(mask):
    """The annotation without its in-plane rim, or the annotation itself when nothing is left."""
    import operator

    core = _in_plane(mask, operator.and_)
    return core if core.any() else mask


def _slice_of(region, z0: int) -> int:
    """The z index (axis 0) where `region` (a mask, or weights) is largest."""
    import numpy as np

    per = region.reshape(region.shape[0], -1).sum(1)
    return int(z0 + int(np.argmax(per)))


def _majority(values, n: int) -> int:
    import numpy as np

    return int(np.bincount(values.astype(np.int64), minlength=n).argmax())


def _vox(n: int) -> str:
    return f"{n:,} voxel{'s' * (n != 1)}"


def weight(f: float) -> float:
    """A region's fraction of a label as evidence in [0, 1): 5% -> 0.5, 20% -> 0.8."""
    return f / (f + HALF) if f > 0 else 0.0


def score_of(fig: dict, typical: float | None = None) -> float:
    """The suspect score of one (case, label) from its figures (see the module's docstring);
    `typical`: the label's usual annotated volume, which a wholly unannotated label is measured by."""
    doubt = fig.get("doubt", 0.0)
    other = weight(fig.get("other_fraction", 0.0))
    missed = weight(missed_fraction(fig, typical))
    return float(min(1.0, max(0.0, 1.0 - (1.0 - doubt) * (1.0 - other) * (1.0 - missed))))


def missed_fraction(fig: dict, typical: float | None = None) -> float:
    s, n = fig.get("missed_voxels", 0), fig.get("voxels", 0)
    if not s:
        return 0.0
    if n:
        return s / (n + s)
    # nothing annotated: the whole label is missing once the region is large enough to be it (half
    # its usual volume; without that, MIN_VOXELS), and a smaller region a part of it
    return min(1.0, s / (WHOLE * typical if typical else MIN_VOXELS))


def case_disagreement(case: str, probabilities: list, ref, labels: dict[int, str], ignore: int | None = None,
                      typical: dict[int, float] | None = None) -> list[Suspect]:
    """One Suspect (source "models") per foreground label the case annotates or the models
    predict confidently (over a region that survives the opening): `probabilities` are the
    models' (C, z, y, x) arrays for the case, `ref` its (z, y, x) annotation in the same space,
    `labels` {value: name} of the foreground, `ignore` the value that counts nowhere, `typical`
    {label: usual annotated voxels} for labels the case does not annotate. Pure numpy/scipy."""
    import numpy as np
    from scipy import ndimage

    if not probabilities:
        return []
    n_classes = int(probabilities[0].shape[0])
    shape = tuple(probabilities[0].shape[1:])
    r = np.asarray(ref)
    if r.shape != shape or any(tuple(a.shape) != tuple(probabilities[0].shape) for a in probabilities):
        raise UsageError(f"case {case}: the reference is {r.shape}, the probabilities "
                         f"{[tuple(a.shape) for a in probabilities]}: not the same image")
    if r.dtype.kind not in "ui":
        r = np.where(np.isfinite(r), np.rint(r), -1)
    valid = (r >= 0) & (r < n_classes)             # judged before any cast: a huge value never wraps to a class
    if ignore is not None:
        valid &= r != ignore
    ref_v = np.where(valid, r, 0).astype(np.int32)     # a class value or 0; `valid` says which voxels count
    del r
    names = {0: "background", **{int(k): str(v) for k, v in labels.items()}}

    def name(c: int) -> str:
        return names.get(c, f"class {c}")

    pmax, parg, p2nd, a2nd = _confident(probabilities, n_classes)
    conf = pmax >= np.float32(CONFIDENT)
    pred = np.where(conf, parg, 0)
    ref_boxes = ndimage.find_objects(ref_v, max_label=n_classes)
    pred_boxes = ndimage.find_objects(pred, max_label=n_classes)
    del pred
    out = []
    for lab in sorted(int(k) for k in labels):
        if lab <= 0 or lab >= n_classes:
            continue
        rb, pb = ref_boxes[lab - 1], pred_boxes[lab - 1]
        if rb is None and pb is None:
            continue
        box = _box([rb, pb], shape)
        z0 = box[0].start
        A = ref_v[box] == lab
        A &= valid[box]
        n = int(A.sum())
        c_conf, c_arg, c_valid, c_ref = conf[box], parg[box], valid[box], ref_v[box]
        pred_l = c_conf & (c_arg == lab)
        thin = False
        both = A | pred_l
        if both.any():
            thin = int(_opened(both).sum()) < 0.5 * int(both.sum())
        shape_of = (lambda m: m) if thin else _opened
        fig: dict = {"voxels": n}
        if n:        # the outline against the models, rims included: + annotation smaller, - larger
            over = int(np.count_nonzero(A & c_conf & (c_arg != lab)))
            under = int(np.count_nonzero(pred_l & ~A & c_valid))
            fig["outline"] = round((under - over) / n, 4)
        reasons: list[tuple[float, str]] = []
        slice_at: list[tuple[float, int]] = []

        if n:
            p = _class_mean(probabilities, lab, box)
            mine = c_arg == lab                               # where this label is the models' first choice,
            other = np.where(mine, p2nd[box], pmax[box])      # the best other class is their second
            other_cls = np.where(mine, a2nd[box], c_arg)
            core = _rim_removed(A)
            margin = p[core] - other[core]                    # > 0: the models prefer the annotated class
            k = max(1, int(np.ceil(SOFT_MIN * margin.size)))
            low = np.argpartition(margin, k - 1)[:k]
            doubt = float(min(1.0, max(0.0, -float(margin[low].mean()))))
            soft = float(p[core][low].mean())
            mean = float(p[A].mean())
            prefer = _majority(other_cls[core][low], n_classes)
            fig.update(mean_probability=round(mean, 4), soft_min=round(soft, 4), doubt=round(doubt, 4))
            if doubt > 0:
                fig["preferred_class"] = prefer
            if mean < 0.5:
                said = f"models give '{name(lab)}' a probability of {mean:.2f} over most of its annotation"
            else:
                said = (f"models give '{name(lab)}' a probability of {soft:.2f} over the least certain tenth of "
                        f"its annotation ({mean:.2f} on average)")
            if doubt > 0:
                said += f" and prefer '{name(prefer)}' there"
            reasons.append((doubt, said))
            slice_at.append((doubt, _slice_of(np.where(A, np.maximum(other - p, 0.0), 0.0), z0)))
            del p, core, margin, other, other_cls, mine
            # (b) annotated this label, the models confident of another class
            other = shape_of(A & c_conf & (c_arg != lab))
            region, s = _largest(other)
            if s:
                k_other = _majority(c_arg[region], n_classes)
                f = s / n
                zs = _slice_of(region, z0)
                fig.update(other_class=k_other, other_voxels=s, other_fraction=round(f, 4), other_slice=zs)
                said = (f"they are confident it is '{name(k_other)}' ({_vox(s)}, {f:.0%} of the annotation, "
                        f"slice {zs})")
                pieces, npieces = components(A)
                if npieces > 1:
                    under = np.bincount(pieces[region], minlength=npieces + 1)
                    piece = int(under.argmax())
                    if under[piece] >= 0.8 * int((pieces == piece).sum()):
                        said += "; that is a separate piece of the annotation, apart from the rest"
                    del under
                del pieces
                reasons.append((weight(f), said))
                slice_at.append((weight(f), zs))
                del region

        # (c) the models confident of this label, the annotation giving another class
        missed = shape_of(pred_l & ~A & c_valid)
        region, s = _largest(missed)
        if s:
            k_ref = _majority(c_ref[region], n_classes)
            zs = _slice_of(region, z0)
            fig.update(missed_voxels=s, missed_class=k_ref, missed_slice=zs)
            if n:
                f = s / (n + s)
                said = (f"models are confident '{name(lab)}' also covers {_vox(s)} annotated "
                        f"'{name(k_ref)}' (slice {zs})")
            else:
                f = missed_fraction(fig, (typical or {}).get(lab))
                said = (f"not annotated in this case, but models are confident of '{name(lab)}' over "
                        f"{_vox(s)} (slice {zs}): a structure left unlabelled?")
            fig["missed_fraction"] = round(f, 4)
            reasons.append((weight(f), said))
            slice_at.append((weight(f), zs))
            del region
        elif not n:
            continue                         # neither annotated nor predicted over a region: nothing to say
        del A, c_conf, c_arg, c_valid, c_ref, pred_l, missed, both
        score = score_of(fig, (typical or {}).get(lab))
        reasons.sort(key=lambda t: -t[0])
        said = [r for i, (w, r) in enumerate(reasons) if i == 0 or w >= SAY_AT]     # no "1 voxel, 0%" noise
        out.append(Suspect(case, lab, name(lab), score, "models", said,
                           max(slice_at)[1] if slice_at else None, fig))
    return out


# --- every case ------------------------------------------------------------------------------
def audit_files(case: str, npz: list, gt_dir, reader, labels: dict[int, str], ignore: int | None):
    """One case read and reduced to its suspects where it runs (a thread, or a Dask worker that
    sees the same paths): the reference with nnU-Net's reader, every model's probabilities."""

    ref = _read_ref(Path(gt_dir), case, reader)
    if ref is None:
        return None
    return case, case_disagreement(case, [read_probabilities(p) for p in npz], ref, labels, ignore)


def typical_volumes(suspects: list[Suspect]) -> dict[int, float]:
    """{label: median annotated voxels over the cases that annotate it}."""
    import statistics

    per: dict[int, list[int]] = {}
    for s in suspects:
        if s.figures.get("voxels"):
            per.setdefault(s.label, []).append(int(s.figures["voxels"]))
    return {lab: float(statistics.median(v)) for lab, v in per.items()}


def rescore_unannotated(suspects: list[Suspect], typical: dict[int, float]) -> None:
    """Labels a case does not annotate, measured against the label's typical volume (in place)."""
    for s in suspects:
        fig = s.figures
        if not fig.get("voxels") and fig.get("missed_voxels") and typical.get(s.label):
            fig["missed_fraction"] = round(missed_fraction(fig, typical[s.label]), 4)
            fig["typical_voxels"] = typical[s.label]
            s.score = score_of(fig, typical[s.label])


# figure -> (way, floor of the spread): how a case's figure is compared with the same label's in
# the other cases; a case far out (robust z above RELATIVE_Z) gains evidence, up to 1 at +5
RELATIVE = {"outline": ("two", 0.02), "other_fraction": ("high", 0.01), "doubt": ("high", 0.05)}
RELATIVE_Z = 3.0
RELATIVE_MIN_CASES = 8


def rescore_against_others(suspects: list[Suspect]) -> None:
    """Models as small or as unsure as a dataset's get disagree with every case a little; what
    marks an annotation is disagreeing more than for the same label in the other cases. Per
    label (at least RELATIVE_MIN_CASES cases annotating it), each RELATIVE figure becomes a
    robust z (median, 1.4826 x MAD, floored); beyond RELATIVE_Z it is evidence e in [0, 1)
    (1 - exp(-(z - RELATIVE_Z) / 3), its largest over the figures), and the score becomes the
    mean of the case's own score and e, with a reason. In place."""
    import statistics

    by_label: dict[int, list[Suspect]] = {}
    for s in suspects:
        if s.figures.get("voxels"):
            by_label.setdefault(s.label, []).append(s)
    for group in by_label.values():
        if len(group) < RELATIVE_MIN_CASES:
            continue
        best: dict[int, tuple[float, str]] = {}
        for name, (way, floor) in RELATIVE.items():
            vals = [float(s.figures.get(name) or 0.0) for s in group]
            med = statistics.median(vals)
            spread = max(1.4826 * statistics.median(abs(v - med) for v in vals), floor)
            for i, (s, v) in enumerate(zip(group, vals)):
                z = (v - med) / spread
                z = abs(z) if way == "two" else z
                if z <= RELATIVE_Z:
                    continue
                e = 1.0 - math.exp(-(z - RELATIVE_Z) / 3.0)          # continuous: far-out cases keep their order
                if e > best.get(i, (0.0, ""))[0]:
                    best[i] = (e, _relative_words(name, v, med, s.name))
        for i, s in enumerate(group):
            e, said = best.get(i, (0.0, ""))
            s.score = 0.5 * s.score + 0.5 * e           # as much the case's own disagreement as its excess
            if not said:
                continue
            s.figures["relative"] = round(e, 4)
            s.reasons = [said] + s.reasons if e >= 0.5 else s.reasons + [said]


def _relative_words(name: str, v: float, med: float, label: str) -> str:
    if name == "outline":
        how = "smaller" if v > med else "larger"
        return (f"the annotation of '{label}' is {how} than the models see it ({v:+.0%} of it, the other "
                f"cases {med:+.0%}): an eroded or bloated outline?")
    if name == "other_fraction":
        return f"more of it is confidently another class than in the other cases ({v:.0%} vs {med:.0%})"
    return f"the models doubt it more than the same label in the other cases ({v:.2f} vs {med:.2f})"


def findings_of(suspects: list[Suspect], where_of=lambda s: s.case, at: float = REPORT_AT) -> list[Finding]:
    """DG805 for each suspect scoring `at` or more: info, a warning when a confident region of
    another class (or of this label, unannotated) is at least WARN_FRACTION of the label."""
    out = []
    for s in ranked(suspects):
        if s.score < at:
            continue
        fig = s.figures
        big = max(fig.get("other_fraction", 0.0), fig.get("missed_fraction", 0.0))
        sev = Severity.WARNING if big >= WARN_FRACTION else Severity.INFO
        where = f", slice {s.slice}" if s.slice is not None else ""
        msg = (f"label '{s.name}' ({s.label}) of {s.case}: the out-of-fold models disagree with the annotation "
               f"(score {s.score:.2f}{where}): " + "; ".join(s.reasons))
        out.append(finding("DG805", where_of(s), msg, case=s.case, severity=sev))
    return out


def audit_models(handle, specs: list[str], on_case=None, include_unfinished: bool = False,
                 checkpoint: str = "final", jobs: int | None = None,
                 at: float = REPORT_AT) -> tuple[list[Suspect], list[Finding]]:
    """The models' label audit of a dataset (`handle`: its Evaluation, `ws.dataset(name).evaluate`):
    (suspects, most suspect first; findings: DG806 on skipped folds, DG805 on suspects scoring
    `at` or more). Cases stream as in `evaluate.weights.load_oof`: a few in flight, each reduced
    to its suspects as it is read. A fold without `--npz` probabilities (or whose validation
    another checkpoint made) audits nothing: a DG507 per such fold names the `--val --npz` call."""

    ds, spec, labels = handle._references(
        no_regions="the label audit with models reads one probability per label; this dataset's models "
                   "predict regions (regions_class_order), which it does not audit yet")
    models, dropped = handle._models(specs, include_unfinished)
    notes = [f for m in models + dropped for f in m.fold_findings()]
    names = [m.spec for m in models]
    oof = OOF(names, labels, [], checkpoint=checkpoint)
    for m in models:                 # a fold whose validation another checkpoint made counts as missing
        for k in m.folds:
            made = validation_checkpoint(m.folder / f"fold_{k}")
            if made != checkpoint:
                oof.missing.setdefault(m.spec, []).append(k)
                oof.why[f"{m.spec} fold {k}"] = f"its validation was made with checkpoint_{made}"
    per_model: dict[str, dict] = {}
    for m in models:
        files = {}
        for k in m.folds:
            if not k.isdigit():
                continue
            got = find_probabilities(m.folder / f"fold_{k}" / "validation")
            if not got and k not in oof.missing.get(m.spec, []):
                oof.missing.setdefault(m.spec, []).append(k)
            files.update(got)
        per_model[m.spec] = files
    if oof.missing:
        calls = handle.validation_calls(models, oof.missing, checkpoint)
        return [], notes + [_audit_words(f) for f in oof.prerequisite_findings(calls)]

    dj, plans = nnunet_meta(models[0].folder)
    reader = writer_for(plans, dj)()
    gt_dir = Path(ds.preprocessed) / "gt_segmentations"
    cases = sorted(set.intersection(*[set(f) for f in per_model.values()])) if per_model else []
    ws = handle._ws
    workers = max(1, jobs or getattr(ws, "jobs", None) or min(4, os.cpu_count() or 1))
    remote = ws.executor if getattr(ws, "client", None) is not None else None
    pool = remote or ThreadPoolExecutor(max_workers=workers)       # inflate and numpy release the GIL
    ignore = spec.ignore_label

    def submit(case):
        return pool.submit(audit_files, case, [str(per_model[m][case].npz) for m in names], str(gt_dir),
                           reader, labels, ignore)
    suspects: list[Suspect] = []
    try:
        todo = iter(cases)
        pending = [submit(c) for c in itertools.islice(todo, workers)]
        while pending:
            got = pending.pop(0).result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(submit(nxt))          # never more than `workers` cases in memory
            if got is not None:
                suspects += got[1]
                if on_case:
                    on_case(got[0])
    finally:
        if remote is None:
            pool.shutdown(wait=True)
    rescore_unannotated(suspects, typical_volumes(suspects))
    rescore_against_others(suspects)
    suspects = ranked(suspects)
    ending = str(dj.get("file_ending", ".nii.gz")) if isinstance(dj, dict) else ".nii.gz"
    found = findings_of(suspects, lambda s: str(gt_dir / f"{s.case}{ending}"), at)
    return suspects, notes + found


def _audit_words(f: Finding) -> Finding:
    """The weight search's DG507, said of the audit."""
    import dataclasses


    return dataclasses.replace(f, message=f.message.replace(
        SELECTION, "the label audit with models needs --npz probabilities of every fold"))
