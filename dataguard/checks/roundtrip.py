"""DG405: can a configuration represent each label? The round trip nnU-Net puts a label through.

nnU-Net resamples every training case to a configuration's target spacing
(`DefaultPreprocessor.run_case_npy`: transpose, `compute_new_shape`, the plans'
`resampling_fn_seg` with its kwargs) and a prediction back to the image's shape at export
(`convert_predicted_logits_to_segmentation_with_correct_shape`: `resampling_fn_probabilities`
with its kwargs, then argmax). A structure thinner than the target spacing (a 1-2 voxel wall,
a vessel) can vanish or break on the way, and no training fixes that. The per-file check
`roundtrip-case` sends each raw training label through every planned configuration as
nnU-Net's own functions do (a perfect network: the resampled label as one-hot
probabilities) and records, per configuration and label, the round-trip Dice and the connected components
before and lost; the dataset check `label-roundtrip` turns the records into DG405.

Where it differs from nnU-Net, and why:
- the label is round-tripped at its full extent: nnU-Net first crops every case to the
  nonzero box of its *images*, which a label-only check does not read (on CT that box is
  the whole image; elsewhere the target shape may differ by a voxel of rounding);
- regions: the figure is per label value, the label map every region is built from.

Cost: the resampling is `resample.py`'s (nnU-Net's default resampling for orders 0 and 1,
computed only where a label reaches, without torch; equal to nnunetv2's own to rounding);
other orders, or a batchgenerators whose rule is not recognised, call nnunetv2's functions
(`roundtrip` below) on the labels' box. Only configurations coarser than the case on some
axis are computed (one at the case's own spacing or finer keeps every label: Dice 1,
nothing resampled); the figures are per-file facts in the manifest, so a rescan with
nothing changed resamples nothing.
Memory: the back path resamples one probability channel at a time with a running argmax,
about 24 bytes per voxel of the case; a case beyond MAX_VOXELS voxels, or a configuration
whose resampled array would be more than MAX_GROWTH times the case's voxels (a hostile
plans file asking for a 0.001 mm spacing), is not computed, and the finding says so.
"""
from __future__ import annotations

import math

from ..findings import Finding, Severity, finding
from ..spec import clip, parse_spec
from .base import FileTask
from .cases import DatasetView
from . import resample
from .resample import values
from .strided import scaling
from .volume_read import nifti_stream

THRESHOLD = 0.9          # mean round-trip Dice below this: DG405 (a warning)
LOST_SHARE = 0.1         # ... or more than this share of a label's components lost entirely
MAX_VOXELS = 1 << 27     # 512^3: ~3 GB at 24 bytes per voxel; a bigger case is not computed
MAX_LABELS = 64          # more distinct values than this: not computed (one resampling per value)
MAX_GROWTH = 4           # a resampled array more than 4x the case's voxels: not computed
MARGIN = 2              # target voxels of background kept around the labels' box
SAME = 1e-3              # relative spacing difference below which an axis is not coarser
VERSION = 2              # 2: dataguard's own separable resampling (checks/resample.py)
KNOWN_FN = "resample_data_or_seg_to_shape"
KWARGS = {"is_seg": bool, "order": int, "order_z": int, "force_separate_z": (bool, type(None)),
          "separate_z_anisotropy_threshold": (int, float)}
NIFTI_ENDINGS = (".nii.gz", ".nii")


# --- what of the plans the round trip depends on (built by the walk, carried by the task) -----
def _resolve(confs: dict, name: str, depth: int = 0) -> dict | None:
    """A configuration with `inherits_from` resolved as nnU-Net's PlansManager does."""
    conf = confs.get(name)
    if not isinstance(conf, dict) or depth > 8:
        return None
    parent = conf.get("inherits_from")
    if isinstance(parent, str) and parent in confs and parent != name:
        base = _resolve(confs, parent, depth + 1)
        if base is not None:
            return {**base, **conf}
    return conf


def _kwargs(v) -> dict | None:
    if not isinstance(v, dict):
        return None
    out = {}
    for k, x in v.items():
        t = KWARGS.get(k)
        if t is None or not isinstance(x, t) or (k in ("order", "order_z") and not 0 <= x <= 5):
            return None
        out[k] = x
    return out


def config_specs(planned) -> str | None:
    """Canonical JSON of what the round trip reads from the plans, for every planned
    configuration (`planned`: engine.layout.PlannedConfig objects); None without plans.
    It is the task's `roundtrip` context: a change re-reads the raw labels."""
    import json

    idents = {pc.plans_file.name for pc in planned}
    out = []
    for pc in planned:
        confs = pc.plans.get("configurations") if isinstance(pc.plans, dict) else None
        conf = _resolve(confs, pc.name) if isinstance(confs, dict) else None
        ident = pc.plans.get("plans_name") if isinstance(pc.plans.get("plans_name"), str) else pc.plans_file.stem
        label = pc.name if len(idents) == 1 else f"{pc.name} ({clip(ident)})"
        spec = {"name": label, "conf": pc.name}
        tf = pc.plans.get("transpose_forward", [0, 1, 2])     # absent (hand-written plans): as written
        if conf is None:
            spec["problem"] = "no usable configuration in the plans"
        else:
            sp = conf.get("spacing")
            seg, prob = conf.get("resampling_fn_seg"), conf.get("resampling_fn_probabilities")
            ks, kp = _kwargs(conf.get("resampling_fn_seg_kwargs")), _kwargs(conf.get("resampling_fn_probabilities_kwargs"))
            if not (isinstance(sp, list) and len(sp) in (2, 3) and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < 1e4 for x in sp)):
                spec["problem"] = "its spacing is not 2 or 3 positive numbers"
            elif not (isinstance(tf, list) and sorted(tf) == [0, 1, 2]):
                spec["problem"] = "the plans' transpose_forward is not a permutation of 0, 1, 2"
            else:
                # a configuration at every case's own spacing needs no resampling: only one that
                # resamples some case is refused for functions or kwargs dataguard cannot follow
                spec.update(spacing=[float(x) for x in sp], transpose=tf)
                if seg != KNOWN_FN or prob != KNOWN_FN:
                    spec["problem"] = f"its resampling functions are not nnU-Net's default {KNOWN_FN}"
                elif ks is None or kp is None:
                    spec["problem"] = "its resampling kwargs are not the ones nnU-Net's default takes"
                else:
                    spec.update(seg=ks, prob=kp)
        out.append(spec)
    if not out:
        return None
    return json.dumps(out, sort_keys=True, separators=(",", ":"))


# --- the per-file check ---------------------------------------------------------------------
def check_roundtrip(task: FileTask, src, data: bytes | None) -> tuple[list[Finding], dict]:
    """Facts `roundtrip` for one raw training label: per configuration, per label value,
    [dice, components before, components lost]; or why it was not computed. No findings."""
    import json

    specs = getattr(task, "roundtrip", None)
    if task.kind != "label" or task.where != "raw" or not specs or not task.rel.startswith("raw/labelsTr/"):
        return [], {}
    name = task.rel.rsplit("/", 1)[-1]
    if not name.endswith(NIFTI_ENDINGS):
        return [], {"roundtrip": {"v": VERSION, "skipped": "not NIfTI: only .nii/.nii.gz labels are round-tripped"}}
    try:
        seg, spacing = read_label(src)
    except Exception as e:  # noqa: BLE001 - DG302 (raw-image) says what is wrong with the file
        return [], {"roundtrip": {"v": VERSION, "skipped": f"label not decoded: {str(e)[:120]}"}}
    if seg.size > MAX_VOXELS:
        return [], {"roundtrip": {"v": VERSION, "skipped": f"{seg.size} voxels, more than the {MAX_VOXELS} "
                                                             f"dataguard round-trips"}}
    present_values = values(seg)
    if len(present_values) > MAX_LABELS:
        return [], {"roundtrip": {"v": VERSION, "skipped": f"{len(present_values)} distinct values, more than the "
                                                             f"{MAX_LABELS} labels dataguard round-trips"}}
    configs, before_of = {}, {}
    for spec in json.loads(specs):
        configs[spec["name"]] = roundtrip_config(seg, spacing, spec, before_of, present_values)
    present = [int(v) for v in present_values if v != 0]
    return [], {"roundtrip": {"v": VERSION, "shape": list(seg.shape), "spacing": spacing, "labels": present,
                              "configs": configs}}


def read_label(src):
    """(array in nnU-Net's SimpleITK order (z, y, x), spacing in that order) of a NIfTI label,
    from the scan's open stream; memory bounded by the header's size (checked against the file)."""
    import numpy as np

    hdr, s, rest = nifti_stream(src)
    dtype = hdr.get_data_dtype()
    shape = [int(x) for x in hdr.get_data_shape()]
    zooms = [float(z) for z in hdr.get_zooms()]
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape {shape}: not a 2D or 3D label")
    n = math.prod(shape)
    if n > MAX_VOXELS:
        return _Big(n), []
    nbytes = n * dtype.itemsize
    raw = (rest + s.take(nbytes - len(rest)))[:nbytes] if len(rest) < nbytes else rest[:nbytes]
    if len(raw) < nbytes:
        raise ValueError("fewer voxels than the header says")
    a = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F")
    sc = scaling(hdr)
    if dtype.kind in "fc" or sc is not None:
        s_, i_ = sc or (1.0, 0.0)
        a = np.rint(np.nan_to_num(a.astype(np.float64) * s_ + i_))
    # an integer label of 1 or 2 bytes keeps its type (a quarter of int32's memory and passes)
    keep = a.dtype.kind in "iu" and a.dtype.itemsize <= 2
    as_int = (lambda x: x.copy()) if keep else (lambda x: x.astype(np.int32))
    if len(shape) == 2:      # nnU-Net's SimpleITKIO: a 2D image is one slice, spacing 999 across
        return as_int(a.T[None]), [999.0, zooms[1], zooms[0]]
    return as_int(a.transpose(2, 1, 0)), [zooms[2], zooms[1], zooms[0]]


class _Big:
    """Stands for a label too big to decode: only its size is looked at."""
    def __init__(self, n: int):
        self.size = n


def coarser(case_spacing, target) -> bool:
    return any(t > s * (1 + SAME) for s, t in zip(case_spacing, target))


def target_of(spec: dict, spacing_t: list[float]) -> list[float]:
    sp = list(spec["spacing"])
    return [spacing_t[0]] + sp if len(sp) < 3 else sp


def roundtrip_config(seg, spacing: list[float], spec: dict, before_of: dict | None = None,
                     present=None) -> dict:
    """One configuration's figures for one case (seg: int array, SimpleITK order; `present`:
    its distinct values, if known)."""
    if "spacing" not in spec:
        return {"refused": spec["problem"]}
    tf = spec["transpose"]
    seg_t = seg.transpose(tf)
    sp_t = [spacing[i] for i in tf]
    target = target_of(spec, sp_t)
    out = {"spacing": target}
    if not coarser(sp_t, target):
        out["same"] = True           # at the case's spacing or finer: nothing can be lost
        return out
    if "problem" in spec:
        return {**out, "refused": spec["problem"]}
    whole = resample.new_shape(seg_t.shape, sp_t, target)
    if min(whole) < 1:
        return {**out, "refused": f"target shape {whole} is empty"}
    if math.prod(whole) > MAX_GROWTH * seg_t.size:
        return {**out, "refused": f"the resampled array ({math.prod(whole)} voxels) would be more than "
                                  f"{MAX_GROWTH}x the case's {seg_t.size}"}
    if resample.supported(spec["seg"], spec["prob"]):
        trip = resample.roundtrip(seg_t, sp_t, target, whole, spec["seg"], spec["prob"])
        if trip is None:
            return {**out, "labels": {}}
        box, crop, back = trip
        out["labels"] = label_figures(crop, back, before_of, present)
        out["box"] = [list(b) for b in box]
        return out
    box = foreground_box(seg_t, sp_t, target, whole)
    if box is None:
        return {**out, "labels": {}}
    crop = seg_t[box]
    new_shape = resample.new_shape(crop.shape, sp_t, target)
    if any(ns != (b.stop - b.start) * n // N for ns, b, n, N in zip(new_shape, box, whole, seg_t.shape)):
        box, crop, new_shape = tuple(slice(0, N) for N in seg_t.shape), seg_t, whole
    back = roundtrip(crop, sp_t, target, new_shape, spec["seg"], spec["prob"])
    out["labels"] = label_figures(crop, back, before_of)
    out["box"] = [[b.start, b.stop] for b in box]
    return out


def foreground_box(seg_t, spacing_t, target, whole) -> tuple[slice, ...] | None:
    """The part of the case the round trip needs: the foreground's box widened by MARGIN
    target voxels, on each axis cut only at a voxel of the case that is also a voxel edge of
    the resampled grid (start = k * N / n for a whole k), so the crop's grid is the whole
    case's grid and the figures are those of the whole case (skimage and scipy map output
    voxel o to input (o + 0.5) * N / n - 0.5 on both). An axis whose N / n is not such a
    ratio (193 -> 96) is kept whole. None: no foreground."""
    import numpy as np

    out = []
    for i in range(seg_t.ndim):
        x = np.flatnonzero(np.any(seg_t != 0, axis=tuple(j for j in range(seg_t.ndim) if j != i)))
        if len(x) == 0:
            return None
        N, n = seg_t.shape[i], whole[i]
        q = n // math.gcd(N, n)                  # small-grid steps whose source position is whole
        m = math.ceil(MARGIN * target[i] / spacing_t[i]) + 1
        lo, hi = max(0, int(x[0]) - m), min(N, int(x[-1]) + 1 + m)
        k0 = (lo * n // N) // q * q
        k1 = min(n, -(-(-(-hi * n // N)) // q) * q)
        a, b = k0 * N // n, (N if k1 >= n else k1 * N // n)
        if b - a < N and (k0 * N % n or (k1 < n and k1 * N % n)):
            a, b = 0, N
        out.append(slice(a, b))
    return tuple(out)


def roundtrip(seg_t, spacing_t, target, new_shape, seg_kwargs: dict, prob_kwargs: dict):
    """nnU-Net's round trip of one transposed label map: `resample_data_or_seg_to_shape` with
    the seg kwargs to `new_shape`, then each label's one-hot channel back to the case's shape
    with the probabilities' kwargs, argmax (a running one: one channel in memory at a time;
    nnU-Net resamples channels independently and argmax keeps the first maximum, as here)."""
    import numpy as np
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape

    small = resample_data_or_seg_to_shape(seg_t[None].astype(np.float32), new_shape, spacing_t, target,
                                          **seg_kwargs)[0]
    present = np.unique(seg_t)
    best = None
    arg = np.zeros(seg_t.shape, dtype=np.int32)
    for v in present:
        ch = (small == v).astype(np.float32)[None]
        up = resample_data_or_seg_to_shape(ch, seg_t.shape, target, spacing_t, **prob_kwargs)[0]
        if best is None:
            best = up
            arg[...] = v
        else:
            win = up > best
            arg[win] = v
            np.maximum(best, up, out=best)
        del up, ch
    return arg


def label_figures(seg_t, back, before_of: dict | None = None, present=None) -> dict[str, list]:
    """Per foreground label of the case: [dice, components before, components lost entirely]
    (counted inside the label's own box; `before_of` keeps each label's count across a
    case's configurations: it is the same in all; `present`: the case's values, when `seg_t`
    is a box holding all its labels)."""
    import numpy as np

    out = {}
    before_of = {} if before_of is None else before_of
    for v in (values(seg_t) if present is None else present):
        if v == 0:
            continue
        a, b = seg_t == v, back == v
        inter = int(np.count_nonzero(a & b))
        na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
        dice = 2 * inter / (na + nb) if na + nb else 1.0
        box = resample.box_of(a)
        a, b = a[box], b[box]
        if int(v) in before_of and inter == na:
            before, lost = before_of[int(v)], 0          # every voxel kept: no component lost
        else:
            lab, before = resample.components(a)
            before_of[int(v)] = before
            kept = values(lab[b & a]) if inter else []
            lost = before - int(np.count_nonzero(kept))
        out[str(int(v))] = [dice, before, lost]
    return out


# --- the dataset check ----------------------------------------------------------------------
def table(view: DatasetView) -> list[dict]:
    """Per configuration x label, over the training cases that hold the label: mean Dice,
    worst Dice and its case, components before and lost; `computed` cases (the others were
    at the configuration's spacing or finer: Dice 1); `refused` why a configuration was not
    computed. One row per (configuration, label), configurations in plans order."""
    spec = parse_spec(view.meta)
    names = {}
    for k, v in spec.labels.items():
        if isinstance(v, int) and k not in ("background",):
            names.setdefault(v, k)
    ignore = spec.ignore_label
    rows: dict[tuple[str, str], dict] = {}
    order: list[str] = []
    refused: dict[str, str] = {}
    spacing: dict[str, list] = {}
    for t in view.tasks:
        if t.kind != "label" or t.where != "raw" or not t.rel.startswith("raw/labelsTr/"):
            continue
        r = view.results.get(t.rel)
        rt = (r.facts or {}).get("roundtrip") if r is not None else None
        if not isinstance(rt, dict) or rt.get("v") != VERSION or not isinstance(rt.get("configs"), dict):
            continue
        present = [str(v) for v in rt.get("labels") or []]
        for cname, c in rt["configs"].items():
            if cname not in order:
                order.append(cname)
            if "refused" in c:
                refused.setdefault(cname, c["refused"])
                continue
            spacing.setdefault(cname, c.get("spacing"))
            if c.get("same"):
                figs = {k: [1.0, None, 0] for k in present}
            else:
                figs = c.get("labels") or {}
            for lab, (dice, before, lost) in figs.items():
                if ignore is not None and lab == str(ignore):
                    continue
                row = rows.setdefault((cname, lab), {"configuration": cname, "label": int(lab),
                                                     "name": names.get(int(lab), lab), "cases": 0,
                                                     "computed": 0, "sum": 0.0, "worst": 1.0,
                                                     "worst_case": None, "components": 0, "lost": 0})
                row["cases"] += 1
                row["sum"] += dice
                if before is not None:
                    row["computed"] += 1
                    row["components"] += before
                    row["lost"] += lost
                if dice < row["worst"] or row["worst_case"] is None:
                    row["worst"], row["worst_case"] = dice, t.case
    out = []
    for cname in order:
        if cname in refused and not any(k[0] == cname for k in rows):
            out.append({"configuration": cname, "refused": refused[cname]})
            continue
        for (c, lab), row in sorted(rows.items(), key=lambda kv: kv[1]["label"]):
            if c == cname:
                row = dict(row, mean=row["sum"] / row["cases"], spacing=spacing.get(cname))
                del row["sum"]
                out.append(row)
    return out


def represents(row: dict) -> bool:
    lost_too_many = row["components"] and row["lost"] > LOST_SHARE * row["components"]
    return row["mean"] >= THRESHOLD and not lost_too_many


def _mm(sp) -> str:
    return " x ".join(f"{x:g}" for x in sp) + " mm" if sp else "?"


def config_of(f: Finding) -> str | None:
    """The configuration a DG405 finding is about ("configuration NAME" in its message)."""
    import re

    m = re.search(r"configuration ([^\s:(]+)", f.message)
    return m.group(1) if m else None


def check_roundtrip_findings(view: DatasetView) -> list[Finding]:
    """DG405 per (configuration, label) that the configuration does not represent: mean
    round-trip Dice over the training cases holding the label below THRESHOLD, or more than
    LOST_SHARE of its components lost entirely; info where a configuration was not computed."""
    rows = table(view)
    where = "raw/labelsTr"
    out = []
    skipped = []
    for t in view.tasks:
        r = view.results.get(t.rel) if t.kind == "label" and t.where == "raw" else None
        rt = (r.facts or {}).get("roundtrip") if r is not None else None
        if isinstance(rt, dict) and rt.get("v") == VERSION and "skipped" in rt:
            skipped.append((t.case, str(rt["skipped"])))
    if skipped:
        case, why = skipped[0]
        out.append(finding("DG405", where, f"round trip not computed for {len(skipped)} training label(s) "
                                           f"(e.g. {case}: {clip(why, 120)})", severity=Severity.INFO))
    by_label: dict[int, list[dict]] = {}
    for row in rows:
        if "refused" not in row:
            by_label.setdefault(row["label"], []).append(row)
    for row in rows:
        if "refused" in row:
            out.append(finding("DG405", where, f"configuration {row['configuration']}: round trip not computed: "
                                               f"{row['refused']}", severity=Severity.INFO))
            continue
        if represents(row):
            continue
        good = [o for o in by_label[row["label"]] if represents(o)]
        good.sort(key=lambda o: -o["mean"])
        if good:
            other = f"configuration {good[0]['configuration']} represents it (Dice {good[0]['mean']:.3f})"
        else:
            other = "no planned configuration represents it"
        lost = f", {row['lost']} of {row['components']} components lost" if row["lost"] else ""
        out.append(finding(
            "DG405", where,
            f"configuration {row['configuration']} (spacing {_mm(row['spacing'])}) cannot represent label "
            f"{row['label']} '{clip(str(row['name']))}': round-trip Dice {row['mean']:.3f} (mean of "
            f"{row['cases']} cases; worst {row['worst']:.3f} in {row['worst_case']}){lost}; {other}"))
    return out
