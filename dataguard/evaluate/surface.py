"""Surface metrics as challenges score them: HD, HD95, ASSD and NSD at a tolerance, in mm.

Definitions (stated, because open-source implementations disagree on exactly these):
- a mask's surface is its voxels with a 6-neighbour outside it (mask XOR its erosion by the
  3x3x3 cross; outside the array counts as outside), as MedPy and MONAI define it;
- the directed distances from A to B are, for every surface voxel of A, the Euclidean
  distance in mm (anisotropic voxels: `spacing`) to the nearest surface voxel of B;
- HD: the largest directed distance either way; HD95: the larger of the two directed 95th
  percentiles (MONAI's `compute_hausdorff_distance(percentile=95)`; MedPy pools both
  directions before the percentile, which is not the same number);
- ASSD: the mean of all directed distances, both ways pooled (Heimann et al. 2009; MONAI's
  symmetric average surface distance);
- NSD at tolerance t: the share of both surfaces' voxels within t mm of the other surface
  (MONAI's `compute_surface_dice`, voxel surfaces).

Empty masks, per MetricsReloaded's conventions, each with a status and never a crash:
both empty: NSD 1, distances 0 ("both empty"); only one empty: distances undefined (None),
NSD 0 ("reference empty", "prediction empty").

Cost: both distance transforms run on the bounding box around both masks, widened by one
voxel (every surface voxel lies inside it, so the distances are exact); scipy's EDT, float64.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..checks.resample import box_of

METRICS = ("hd", "hd95", "assd", "nsd")         # what `evaluate --metric` may add to Dice
DEFAULT_TOLERANCE = 2.0                        # mm, NSD's tolerance when none is stated
SURFACE_DEFINITIONS = {                        # written into evaluate's JSON beside the figures
    "surface": "voxels with a 6-neighbour outside the mask (outside the array counts as outside)",
    "hd": "largest distance from either surface to the other, mm",
    "hd95": "the larger of the two directed 95th percentiles (MONAI), mm",
    "assd": "mean of both directions' distances pooled (Heimann 2009; MONAI symmetric), mm",
    "nsd": "share of both surfaces' voxels within the tolerance of the other surface (MONAI)",
    "empty": "both empty: distances 0, NSD 1; one empty: distances null, NSD 0 (MetricsReloaded)",
}


@dataclass(frozen=True)
class Surface:
    """The surface metrics of one (reference, prediction) mask pair."""
    hd: float | None
    hd95: float | None
    assd: float | None
    nsd: float
    status: str                 # "scored", "both empty", "reference empty", "prediction empty"
    tolerance: float

    def to_dict(self) -> dict:
        return {"hd": self.hd, "hd95": self.hd95, "assd": self.assd, "nsd": self.nsd,
                "status": self.status, "tolerance": self.tolerance}


def _surface(mask):
    """Voxels of `mask` with a 6-neighbour outside it (beyond the array counts as outside)."""
    from scipy import ndimage

    st = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=st, border_value=0)


def directed_distances(ref, pred, spacing):
    """(distances from pred's surface to ref's, from ref's surface to pred's), mm; both masks
    non-empty booleans of one shape."""
    import numpy as np
    from scipy import ndimage

    box = box_of(ref | pred)
    # one voxel of background around the box: erosion at the crop's edge then means what it
    # means at the array's edge, and every surface voxel keeps its true neighbours
    r = np.pad(ref[box], 1)
    p = np.pad(pred[box], 1)
    sr, sp = _surface(r), _surface(p)
    sampling = [float(s) for s in spacing]
    # one distance map alive at a time: the box's float64 map is the memory that counts
    d_pr = ndimage.distance_transform_edt(~sr, sampling=sampling)[sp]
    d_rp = ndimage.distance_transform_edt(~sp, sampling=sampling)[sr]
    return d_pr, d_rp


def surface_metrics(ref, pred, spacing, tolerance: float = DEFAULT_TOLERANCE) -> Surface:
    """HD, HD95, ASSD and NSD at `tolerance` mm of one boolean mask pair (see the module)."""
    import numpy as np

    ref = np.asarray(ref, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if ref.shape != pred.shape:
        raise ValueError(f"shapes differ: reference {ref.shape}, prediction {pred.shape}")
    if len(spacing) != ref.ndim or not all(float(s) > 0 for s in spacing):
        raise ValueError(f"spacing {list(spacing)} does not fit a {ref.ndim}-D mask")
    has_r, has_p = bool(ref.any()), bool(pred.any())
    if not has_r and not has_p:
        return Surface(0.0, 0.0, 0.0, 1.0, "both empty", tolerance)
    if not has_r or not has_p:
        return Surface(None, None, None, 0.0, "reference empty" if not has_r else "prediction empty", tolerance)
    d_pr, d_rp = directed_distances(ref, pred, spacing)
    hd = float(max(d_pr.max(), d_rp.max()))
    hd95 = float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)))
    assd = float((d_pr.sum() + d_rp.sum()) / (d_pr.size + d_rp.size))
    nsd = float((np.count_nonzero(d_pr <= tolerance) + np.count_nonzero(d_rp <= tolerance))
                / (d_pr.size + d_rp.size))
    return Surface(hd, hd95, assd, nsd, "scored", tolerance)
