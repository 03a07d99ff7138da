"""nnU-Net's default resampling of a label map, and back, computed only where a label is.

nnU-Net's `resample_data_or_seg_to_shape` resizes a whole case with skimage (scipy's
`zoom`, grid mode, edge mode), slice by slice when the spacing is anisotropic, one label's
indicator at a time. For order 0 and 1 (what nnU-Net plans) that is a separable map per
axis: output voxel o reads input x = (o + 0.5) * N / n - 0.5, clamped to the case, linearly
(weights 1 - t, t) or nearest (floor(x + 0.5)). A label's indicator is zero away from the
label, so only the output voxels whose inputs touch a label need computing; everything else
is background, exactly. This module computes those voxels, axis by axis, in float64 as
nnU-Net does: the figures equal nnunetv2's own to floating rounding (the per-voxel sums are
added in another order; checked against nnunetv2 in tests/test_roundtrip.py, tolerance
1e-3 on a label's Dice, measured 0 on the test cases), at a fraction of its cost and
without importing torch.

How a resized label map settles a voxel where indicators meet depends on batchgenerators'
`resize_segmentation`, whose rule changed between versions: the old one writes each label
whose indicator is >= 0.5 in ascending order (the last wins), the new one takes the argmax
and settles exact ties with the nearest neighbour's label. `seg_rule()` reads which one is
installed, without importing it; an unknown one is None, and the caller uses nnunetv2's
own functions instead.
"""
from __future__ import annotations

import math
from functools import lru_cache

ANISO_THRESHOLD = 3      # nnunetv2.configuration.ANISO_THRESHOLD
ORDERS = (0, 1)          # what is computed here; other orders go to nnunetv2's functions


def new_shape(shape, spacing, target) -> list[int]:
    """nnunetv2's compute_new_shape, the same expression (Python's round)."""
    return [int(round(i / j * k)) for i, j, k in zip(spacing, target, shape)]


def _lowres_axes(spacing) -> list[int]:
    m = max(spacing)
    return [i for i, s in enumerate(spacing) if m / s == 1]


def separate_axis(force, current, new, threshold=ANISO_THRESHOLD) -> int | None:
    """nnunetv2's determine_do_sep_z_and_axis: the axis resampled on its own, or None."""
    if force is not None:
        axes = _lowres_axes(current) if force else None
    elif max(current) / min(current) > threshold:
        axes = _lowres_axes(current)
    elif max(new) / min(new) > threshold:
        axes = _lowres_axes(new)
    else:
        axes = None
    return axes[0] if axes is not None and len(axes) == 1 else None


@lru_cache(maxsize=1)
def seg_rule() -> str | None:
    """'nearest' (argmax, exact ties to the nearest neighbour's label), 'threshold' (>= 0.5,
    ascending, the last wins) or None (not recognised) for the installed batchgenerators."""
    import importlib.util
    import re

    try:
        spec = importlib.util.find_spec("batchgenerators.augmentations.utils")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    try:
        with open(spec.origin, encoding="utf-8") as f:
            src = f.read(1 << 20)
    except OSError:
        return None
    m = re.search(r"\ndef resize_segmentation\((.*?)\n(?=def |\Z)", src, re.S)
    if m is None:
        return None
    body = m.group(1)
    if "seg_tiebreak='nearest'" in body and "_resample_seg_by_argmax" in body:
        return "nearest"
    if "reshaped_multihot >= 0.5" in body and "_resample_seg_by_argmax" not in body:
        return "threshold"
    return None


def supported(seg_kwargs: dict, prob_kwargs: dict) -> bool:
    return (seg_rule() is not None
            and all(k.get("order", 3) in ORDERS and k.get("order_z", 0) in ORDERS for k in (seg_kwargs, prob_kwargs)))


def values(a):
    """The distinct values of an int label map, ascending: a count, not a sort, when they
    are small and non-negative (the usual label map)."""
    import numpy as np

    if a.size and a.dtype.kind in "iu":
        lo, hi = int(a.min()), int(a.max())
        if lo >= 0 and hi < 16 and a.dtype.itemsize == 1 and a.size > 1 << 16:
            # a few values in a big byte map: one comparison each beats bincount's copy to intp
            return np.array([v for v in range(lo, hi + 1) if v in (lo, hi) or (a == v).any()], dtype=a.dtype)
        if lo >= 0 and hi < 1 << 16:
            return np.flatnonzero(np.bincount(a.ravel(), minlength=hi + 1)).astype(a.dtype)
    return np.unique(a)


# --- one axis ------------------------------------------------------------------------------
class AxisMap:
    """Output voxels [lo, hi) of one axis resized from N to n: which inputs each reads."""

    def __init__(self, N: int, n: int, order: int):
        import numpy as np

        self.N, self.n, self.order = N, n, order
        self.same = N == n
        if self.same:
            self.i0 = self.i1 = np.arange(n)
            self.t = np.zeros(n)
            return
        x = (np.arange(n, dtype=np.float64) + 0.5) * (N / n) - 0.5
        np.clip(x, 0, N - 1, out=x)
        if order == 0:
            self.i0 = self.i1 = np.minimum(np.floor(x + 0.5).astype(np.int64), N - 1)
            self.t = np.zeros(n)
        else:
            self.i0 = np.floor(x).astype(np.int64)
            self.t = x - self.i0
            self.i1 = np.minimum(self.i0 + 1, N - 1)

    def nearest(self):
        """The order-0 map of the same axis (batchgenerators' tie-break reads it)."""
        return self if self.order == 0 or self.same else AxisMap(self.N, self.n, 0)

    def touching(self, lo: int, hi: int) -> tuple[int, int]:
        """The output range whose inputs meet input range [lo, hi) (empty: (0, 0))."""
        import numpy as np

        hit = np.flatnonzero((self.i1 >= lo) & (self.i0 < hi))
        return (int(hit[0]), int(hit[-1]) + 1) if len(hit) else (0, 0)

    def needs(self, lo: int, hi: int) -> tuple[int, int]:
        """The input range outputs [lo, hi) read."""
        return int(self.i0[lo:hi].min()), int(self.i1[lo:hi].max()) + 1


def _along(a, ax: int, m: AxisMap, lo: int, hi: int, start: int):
    """Outputs [lo, hi) of axis `ax` of `a`, whose axis begins at input index `start`."""
    import numpy as np

    if m.same and (lo - start, hi - start) == (0, a.shape[ax]):
        return a
    i0 = m.i0[lo:hi] - start
    if m.order == 0 or m.same:
        return np.take(a, i0, axis=ax)
    shape = [1] * a.ndim
    shape[ax] = hi - lo
    t = m.t[lo:hi].reshape(shape)
    return np.take(a, i0, axis=ax) * (1.0 - t) + np.take(a, m.i1[lo:hi] - start, axis=ax) * t


def resize_box(a, maps, out_box, in_start):
    """Outputs `out_box` ([lo, hi) per axis) of float array `a`, whose first voxel is input
    index `in_start`, resized axis by axis with `maps`."""
    for ax, (m, (lo, hi)) in enumerate(zip(maps, out_box)):
        a = _along(a, ax, m, lo, hi, in_start[ax])
    return a


# --- the round trip -----------------------------------------------------------------------
def _maps(shape, out_shape, axis, order, order_z):
    """Per axis of a case: in-plane maps of `order`; the separate axis (if any) order_z."""
    return [AxisMap(N, n, order_z if ax == axis else order) for ax, (N, n) in enumerate(zip(shape, out_shape))]


def _hull(a, b):
    return [(min(x[0], y[0]), max(x[1], y[1])) for x, y in zip(a, b)]


def _slices(box):
    return tuple(slice(lo, hi) for lo, hi in box)


def forward(seg, fg_box, out_shape, axis, kwargs: dict, rule: str):
    """The label map resized to `out_shape` (nnU-Net's seg resampling), computed only where
    a label reaches; zeros elsewhere. Returns (small map, its box that holds every label)."""
    import numpy as np

    order, order_z = kwargs.get("order", 3), kwargs.get("order_z", 0)
    in_plane = [AxisMap(N, (N if ax == axis else n), order) for ax, (N, n) in enumerate(zip(seg.shape, out_shape))]
    box = [m.touching(lo, hi) for m, (lo, hi) in zip(in_plane, fg_box)]
    if any(lo >= hi for lo, hi in box):
        return np.zeros(out_shape, dtype=np.int32), box
    near = [m.nearest() for m in in_plane]
    need = _hull([m.needs(lo, hi) for m, (lo, hi) in zip(in_plane, box)],
                 [m.needs(lo, hi) for m, (lo, hi) in zip(near, box)])
    part = seg[_slices(need)]
    start = [lo for lo, _ in need]
    labels = values(part)
    if order == 0:
        small = resize_box(part.astype(np.float64), near, box, start).astype(np.int32)
    else:
        small = _settle(part, labels, in_plane, near, box, start, rule)
    if axis is not None and seg.shape[axis] != out_shape[axis]:
        small, box = _along_z(small, box, axis, seg.shape[axis], out_shape[axis], order_z)
    full = np.zeros(out_shape, dtype=np.int32)
    full[_slices(box)] = small
    return full, box


def _reach(ind, maps, box, start):
    """(output box, input box) of the outputs whose inputs meet indicator `ind`'s true
    voxels, in `box`'s and `ind`'s coordinates; None: `ind` is all false. Outside that output
    box the indicator resizes to exactly 0, so nothing there needs computing."""
    b = box_of(ind)
    if b is None:
        return None
    out, src = [], []
    for m, s, (lo, hi), st in zip(maps, b, box, start):
        o0, o1 = m.touching(s.start + st, s.stop + st)
        o0, o1 = max(o0, lo), min(o1, hi)
        if o0 >= o1:
            return None
        i0, i1 = m.needs(o0, o1)
        out.append((o0 - lo, o1 - lo))
        src.append((i0 - st, i1 - st))
    return out, src


def _score(ind, maps, box, start):
    """A label indicator resized over `box`, computed only where it reaches: (its sub-box of
    `box`, the scores there) or None where it reaches nothing."""
    import numpy as np

    r = _reach(ind, maps, box, start)
    if r is None:
        return None
    out, src = r
    sub = [(lo + b[0], hi + b[0]) for (lo, hi), b in zip(out, box)]
    part = ind[_slices(src)].astype(np.float64)
    return _slices(out), resize_box(part, maps, sub, [s0 + st for (s0, _), st in zip(src, start)])


def _settle(part, labels, maps, near, box, start, rule):
    """Each label's indicator resized; the winner per voxel by batchgenerators' rule. The
    first label (the background, where present) is resized over the whole box; the others
    only where they reach (elsewhere their score is exactly 0 and cannot win)."""
    import numpy as np

    shape = tuple(hi - lo for lo, hi in box)
    if rule == "threshold":
        out = np.zeros(shape, dtype=np.int32)
        for c in labels:
            got = _score(part == c, maps, box, start)
            if got is not None:
                where, score = got
                out[where][score >= 0.5] = c
        return out
    nn = resize_box(part.astype(np.float64), near, box, start)
    best = win = nn_score = None
    for c in labels:
        if best is None:
            best = resize_box((part == c).astype(np.float64), maps, box, start)
            win = np.full(shape, c, dtype=np.int32)
            nn_score = np.where(nn == c, best, 0.0)
            continue
        got = _score(part == c, maps, box, start)
        if got is None:
            continue
        where, score = got
        b, w, ns = best[where], win[where], nn_score[where]
        w[score > b] = c
        np.maximum(b, score, out=b)
        np.copyto(ns, score, where=nn[where] == c)
    tie = (nn_score == best) & (nn_score > 0)
    win[tie] = nn[tie].astype(np.int32)
    return win


def _along_z(small, box, axis, N, n, order_z):
    """nnU-Net's separate resampling of the out-of-plane axis of a label map."""
    import numpy as np

    m = AxisMap(N, n, order_z)
    lo, hi = m.touching(*box[axis])
    new_box = list(box)
    new_box[axis] = (lo, hi)
    if lo >= hi:
        return np.zeros([b - a for a, b in new_box], dtype=np.int32), new_box
    need = m.needs(lo, hi)
    pad = list(box)
    pad[axis] = (min(need[0], box[axis][0]), max(need[1], box[axis][1]))
    src = np.zeros([b - a for a, b in pad], dtype=small.dtype)       # zeros outside the box: background
    off = [b[0] - p[0] for b, p in zip(box, pad)]
    src[tuple(slice(o, o + s) for o, s in zip(off, small.shape))] = small
    if order_z == 0:
        return _along(src, axis, m, lo, hi, pad[axis][0]).astype(np.int32), new_box
    out = np.zeros([b - a for a, b in new_box], dtype=np.int32)
    for c in np.unique(small):        # nnU-Net: per label, linear along z, np.round(v) > 0.5, ascending
        v = _along((src == c).astype(np.float64), axis, m, lo, hi, pad[axis][0])
        out[np.round(v) > 0.5] = c
    return out, new_box


def back(small, small_box, out_shape, axis, kwargs: dict, region):
    """The label map `small` back to `out_shape` as nnU-Net exports a prediction: each
    label's one-hot channel resized with the probabilities' kwargs (float64, stored float32),
    argmax, the first maximum winning. Computed over `region` (a box of the output): the
    rest is background exactly when `region` holds every voxel `small_box` reaches."""
    import numpy as np

    order, order_z = kwargs.get("order", 3), kwargs.get("order_z", 0)
    maps = _maps(small.shape, out_shape, axis, order, order_z)
    need = [m.needs(lo, hi) for m, (lo, hi) in zip(maps, region)]
    part = small[_slices(need)]
    start = [lo for lo, _ in need]
    best = arg = None
    for v in np.union1d([0], values(part)):      # the background over the whole region, first
        if best is None:
            best = resize_box((part == v).astype(np.float64), maps, region, start).astype(np.float32)
            arg = np.full(best.shape, v, dtype=np.int32)
            continue
        got = _score(part == v, maps, region, start)      # the others only where they reach
        if got is None:
            continue
        where, up = got
        b, a = best[where], arg[where]
        up = up.astype(np.float32)
        a[up > b] = v
        np.maximum(b, up, out=b)
    return arg


def reach(small_box, small_shape, out_shape, axis, kwargs: dict):
    """The output box whose voxels read any small voxel inside `small_box`."""
    order, order_z = kwargs.get("order", 3), kwargs.get("order_z", 0)
    maps = _maps(small_shape, out_shape, axis, order, order_z)
    return [m.touching(lo, hi) for m, (lo, hi) in zip(maps, small_box)]


def roundtrip(seg_t, spacing_t, target, shape_small, seg_kwargs: dict, prob_kwargs: dict):
    """(box, seg_t inside it, its round trip inside it): every voxel outside the box is
    background both before and after. None: the case has no label."""
    import numpy as np

    whole = box_of(seg_t != 0)
    if whole is None:
        return None
    fg = [(b.start, b.stop) for b in whole]
    th = seg_kwargs.get("separate_z_anisotropy_threshold", ANISO_THRESHOLD)
    ax_f = separate_axis(seg_kwargs.get("force_separate_z"), spacing_t, target, th)
    small, sbox = forward(seg_t, fg, shape_small, ax_f, seg_kwargs, seg_rule())
    th_b = prob_kwargs.get("separate_z_anisotropy_threshold", ANISO_THRESHOLD)
    ax_b = separate_axis(prob_kwargs.get("force_separate_z"), target, spacing_t, th_b)
    if any(lo >= hi for lo, hi in sbox):
        region = fg
        up = np.zeros([b - a for a, b in region], dtype=np.int32)
    else:
        region = _hull(fg, reach(sbox, small.shape, seg_t.shape, ax_b, prob_kwargs))
        up = back(small, sbox, seg_t.shape, ax_b, prob_kwargs, region)
    return region, seg_t[_slices(region)], up


def box_of(mask) -> tuple[slice, ...] | None:
    """The bounding box of a mask's true voxels, one slice per axis; None: none is true."""
    import numpy as np

    out = []
    for i in range(mask.ndim):
        x = np.flatnonzero(np.any(mask, axis=tuple(j for j in range(mask.ndim) if j != i)))
        if len(x) == 0:
            return None
        out.append(slice(int(x[0]), int(x[-1]) + 1))
    return tuple(out)


def components(mask) -> tuple[object, int]:
    """(labelled array, count) of a mask's connected components, every neighbour touching (26
    in 3D, 8 in 2D: scipy's label with a 3^n structure, skimage's default). cc3d (nnunetv2
    depends on it through acvl_utils) imports in 3 ms where scipy.ndimage takes 170 ms in each
    scan worker, and labels faster. The one component labelling of the round trip, the label
    audit (both ways) and the post-processing decision."""
    import cc3d

    lab, n = cc3d.connected_components(mask, connectivity=26 if mask.ndim == 3 else 8, return_N=True)
    return lab, int(n)


def voxels(box) -> int:
    return math.prod(hi - lo for lo, hi in box)
