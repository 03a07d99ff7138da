"""DG204/DG205: nnU-Net's per-case `.pkl` properties, read without ever executing them.

A restricted unpickler resolves only an allow-list of globals (numpy arrays, dtypes,
scalars, a few builtins). Anything else stops the load and is reported as DG205; the
referenced callable is never imported, let alone called.
"""
from __future__ import annotations

import io
import pickle

from ..findings import Finding, Fix, finding
from .base import FileTask

REQUIRED_KEYS = ("spacing", "shape_before_cropping", "bbox_used_for_cropping",
                 "shape_after_cropping_and_before_resampling", "class_locations")

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "tuple"), ("builtins", "list"),
    ("builtins", "dict"), ("builtins", "slice"), ("builtins", "complex"), ("builtins", "bytearray"),
}
_ALLOWED_PREFIXES = ("numpy.dtypes",)   # numpy 2 dtype classes, e.g. numpy.dtypes.Float64DType


class ForbiddenGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED or module.startswith(_ALLOWED_PREFIXES):
            return super().find_class(module, name)
        raise ForbiddenGlobal(module, name)


def safe_load(data: bytes):
    """Load a plain-data pickle; raises ForbiddenGlobal for anything else."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def present_labels(props: dict) -> list[int] | None:
    """Labels a case contains, from `class_locations` (no segmentation needed)."""
    locs = props.get("class_locations")
    if not isinstance(locs, dict):
        return None
    out = []
    for k, v in locs.items():
        try:
            if len(v):
                out.append(int(k) if not isinstance(k, tuple) else k)
        except TypeError:
            continue
    return sorted(x for x in out if isinstance(x, int))


def check_pkl(task: FileTask, data: bytes) -> tuple[list[Finding], dict]:
    try:
        props = safe_load(data)
    except ForbiddenGlobal as e:
        return [finding("DG205", task.rel,
                        f"pickle references {e.module}.{e.name}, which is not plain data; it was not executed",
                        case=task.case, fix=Fix.QUARANTINE)], {}
    except Exception as e:  # truncated or garbage pickles raise many different errors
        return [finding("DG204", task.rel, f"properties unreadable: {type(e).__name__}: {e}",
                        case=task.case, fix=Fix.REPREPROCESS)], {}
    if not isinstance(props, dict):
        return [finding("DG204", task.rel, f"properties are a {type(props).__name__}, not a dict",
                        case=task.case, fix=Fix.REPREPROCESS)], {}
    missing = [k for k in REQUIRED_KEYS if k not in props]
    facts = {"labels_present": present_labels(props)}
    if missing:
        return [finding("DG204", task.rel, f"properties lack required keys: {', '.join(missing)}",
                        case=task.case, fix=Fix.REPREPROCESS)], facts
    return [], facts
