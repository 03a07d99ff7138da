"""cast: rewrite a float raw label with an unsigned integer type (original to quarantine)."""
from __future__ import annotations

from ...findings import ActionKind
from .base import ApplyContext, Outcome, no_payload, split_target, target_only

KIND = ActionKind.CAST
ORDER = 0
prepare = no_payload
files = target_only


def describe(a) -> str:
    return "rewrite label with an unsigned integer type (original to quarantine)"


def run(a, ctx: ApplyContext) -> Outcome:
    import nibabel as nib
    import numpy as np

    part, rel = split_target(a.target)
    j = ctx.journals[part]
    src = j.root / rel
    img = nib.load(str(src))
    values = np.asanyarray(img.dataobj, dtype=np.float64)
    rounded = np.rint(values)
    dev = float(np.max(np.abs(values - rounded))) if values.size else 0.0
    if dev > 1e-3 or (rounded.size and rounded.min() < 0):
        return Outcome(a, False, f"values are up to {dev:.3g} from integers (or negative): not cast")
    dtype = np.uint8 if rounded.max(initial=0) <= 255 else np.uint16
    hdr = img.header.copy()
    hdr.set_data_dtype(dtype)
    hdr.set_slope_inter(1.0, 0.0)
    out = type(img)(rounded.astype(dtype), img.affine, header=hdr)
    staged = j.staging / rel
    staged.parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, str(staged))
    j.quarantine_file(rel, reason=a.codes)
    j.place_file(staged, rel)
    return Outcome(a, True, f"cast to {np.dtype(dtype).name} (max deviation was {dev:.2g})", [a.target])
