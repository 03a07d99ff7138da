"""DG204/DG205: nnU-Net's per-case `.pkl` properties, read without ever executing them.

`safe_pickle` runs only the data opcodes and an exact allow-list of (module, name) pairs
with checked arguments. Anything else stops the load and is reported as DG205, naming what
the file asked for; the referenced callable is never imported, let alone called. A file the
safe loader cannot read is a DG204 that says why: garbage, one of its limits reached (nesting,
bytes built, work: "limit reached: ..."), or a form CPython's pickle.loads, nnU-Net's reader,
would read otherwise than dataguard did.
"""
from __future__ import annotations

import numbers
import sys

from ..findings import Finding, Fix, finding
from .base import FileTask
from .metadata import is_spacing, short
from .safe_pickle import Array, Malformed, NeedNumpy, Refused, loads, loads_numpy

REQUIRED_KEYS = ("spacing", "shape_before_cropping", "bbox_used_for_cropping",
                 "shape_after_cropping_and_before_resampling", "class_locations")

def _is_int(v) -> bool:
    """A Python or numpy integer (bools are not labels or sizes)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_label_key(k) -> bool:
    """An integer label, or a tuple of them (a region, or nnU-Net's ignore-label entry)."""
    return _is_int(k) or (isinstance(k, tuple) and bool(k) and all(_is_int(x) for x in k))


def _is_locations(v) -> bool:
    """A class_locations value: an array of voxel coordinates, or a list ([] when absent)."""
    if isinstance(v, (list, tuple)):
        return True
    shape = getattr(v, "shape", None)
    return _is_ndarray(v) and isinstance(shape, tuple) and len(shape) >= 1


def _is_ndarray(v) -> bool:
    if isinstance(v, Array):
        return True
    np = sys.modules.get("numpy")     # no numpy loaded: no numpy object can be in the pickle
    return np is not None and isinstance(v, np.ndarray)


def _count(v) -> int:
    """How many voxel coordinates a class_locations value holds (0 for anything else)."""
    if isinstance(v, (list, tuple)):
        return len(v)
    if _is_locations(v):
        return int(v.shape[0])
    return 0


def _seq(v) -> list | None:
    """The items of a list, tuple or 1-D numpy array; None for anything else."""
    if isinstance(v, (list, tuple)):
        return list(v)
    if _is_ndarray(v) and v.ndim == 1:
        return list(v)
    return None


def _finite_positive(x) -> bool:
    """A voxel size nnU-Net can compute with: a finite float64 in metadata's SPACING_RANGE
    (2**33554432 is a positive int no float can hold)."""
    return is_spacing(x)


def type_problems(props: dict) -> list[str]:
    """Values of the required keys that nnU-Net cannot use (any plain-data value in, no raise)."""
    out = []
    sp = _seq(props.get("spacing"))
    if sp is None or not 2 <= len(sp) <= 3 or not all(_finite_positive(x) for x in sp):
        out.append(f"'spacing' must be 2-3 positive finite numbers (a float64, 1e-10 to 1e10 mm), got {short(props.get('spacing'))}")
    for key in ("shape_before_cropping", "shape_after_cropping_and_before_resampling"):
        sh = _seq(props.get(key))
        if sh is None or not sh or not all(_is_int(x) and x >= 0 for x in sh):
            out.append(f"'{key}' must be a sequence of non-negative integers, got {short(props.get(key))}")
    bbox = _seq(props.get("bbox_used_for_cropping"))
    pairs = [_seq(b) for b in bbox] if bbox is not None else None
    if not pairs or not all(p is not None and len(p) == 2 and all(_is_int(x) for x in p)
                            and 0 <= p[0] <= p[1] for p in pairs):
        out.append("'bbox_used_for_cropping' must be a sequence of [low, high] integer pairs, got "
                   f"{short(props.get('bbox_used_for_cropping'))}")
    locs = props.get("class_locations")
    if not isinstance(locs, dict):
        out.append(f"'class_locations' must be a dict label -> voxel coordinates, got {short(locs)}")
    else:
        bad_keys = [k for k in locs if not _is_label_key(k)]
        if bad_keys:
            out.append(f"'class_locations' keys must be integer labels (or tuples of them for regions), "
                       f"got {short(bad_keys)}")
        bad_vals = [k for k, v in locs.items() if _is_label_key(k) and not _is_locations(v)]
        if bad_vals:
            out.append(f"'class_locations' values must be arrays or lists of voxel coordinates; "
                       f"label {short(bad_vals[0])} holds {short(locs[bad_vals[0]])}")
    return out


def present_labels(props) -> list[int] | None:
    """Labels a case contains, from `class_locations` (no segmentation needed). Never raises.

    None when class_locations is missing or not a dict; keys that are not integer labels
    (region tuples, strings, floats) are left out.
    """
    locs = props.get("class_locations") if isinstance(props, dict) else None
    if not isinstance(locs, dict):
        return None
    return sorted({int(k) for k, v in locs.items() if _is_int(k) and _count(v) > 0})


def _read(task: FileTask, data: bytes, load) -> tuple[object, list[Finding]]:
    """(value, []) or (None, [the finding that says why the file cannot be read])."""
    try:
        return load(data), []
    except Refused as e:
        return None, [finding("DG205", task.rel, f"{e} (it is not plain data)", case=task.case, fix=Fix.QUARANTINE)]
    except Malformed as e:  # garbage, a safe loader's limit reached, a form pickle.loads would read otherwise
        return None, [finding("DG204", task.rel, f"properties unreadable: {e}", case=task.case,
                              fix=Fix.REPREPROCESS)]
    except Exception as e:  # noqa: BLE001 - truncated or garbage pickles raise many different errors
        return None, [finding("DG204", task.rel, f"properties unreadable: {type(e).__name__}: {e}",
                              case=task.case, fix=Fix.REPREPROCESS)]


def check_pkl(task: FileTask, data: bytes) -> tuple[list[Finding], dict]:
    props, bad = _read(task, data, loads)
    if bad:
        return bad, {}
    if not isinstance(props, dict):
        return [finding("DG204", task.rel, f"properties are a {type(props).__name__}, not a dict",
                        case=task.case, fix=Fix.REPREPROCESS)], {}
    try:
        return _judge(task, props)
    except NeedNumpy:      # a stand-in met a question only numpy can answer: ask numpy
        props, bad = _read(task, data, loads_numpy)
        return (bad, {}) if bad else _judge(task, props)


def _judge(task: FileTask, props: dict) -> tuple[list[Finding], dict]:
    missing = [k for k in REQUIRED_KEYS if k not in props]
    facts = {"labels_present": present_labels(props)}
    if missing:
        return [finding("DG204", task.rel, f"properties lack required keys: {', '.join(missing)}",
                        case=task.case, fix=Fix.REPREPROCESS)], facts
    return [finding("DG204", task.rel, f"properties: {p}", case=task.case, fix=Fix.REPREPROCESS)
            for p in type_problems(props)], facts
