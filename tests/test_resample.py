"""dataguard's separable, label-boxed resampling (checks/resample.py) against nnunetv2's own
`resample_data_or_seg_to_shape` on the same label maps, voxel by voxel.

Stated tolerance: the round-tripped label map may differ from nnunetv2's only where floating
rounding of a sum decides an exact tie; a label's Dice within 1e-3. The cases cover what
nnU-Net plans: anisotropic cases resampled slice by slice with the out-of-plane axis on its
own (changed and unchanged), isotropic 3D resampling, a 2D configuration, ratios that are not
whole (171 -> 86), order_z 1, order 0, forced and forbidden separate z, labels touching the
border, several labels meeting, a case with no label."""
from __future__ import annotations

import numpy as np
import pytest

from dataguard.checks import resample as rs
from dataguard.checks import roundtrip as rt

SEG = {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None}
PROB = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}


def _blobs(shape, n_labels, seed, border=False):
    rng = np.random.default_rng(seed)
    seg = np.zeros(shape, dtype=np.int32)
    grid = np.indices(shape).astype(np.float64)
    for lab in range(1, n_labels + 1):
        for _ in range(2):
            c = [rng.uniform(0, s) if border else rng.uniform(s * 0.25, s * 0.75) for s in shape]
            r = [max(1.0, rng.uniform(0.08, 0.3) * s) for s in shape]
            d = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r))
            seg[d <= 1] = lab
    # a one-voxel-thin wall and speckle: where rounding and ties matter
    seg[:, shape[1] // 3, shape[2] // 4: shape[2] // 2] = n_labels
    seg[rng.random(shape) < 0.002] = 1
    return seg


def _nnunet(seg, spacing, target, seg_kw, prob_kw):
    return rt.roundtrip(seg, spacing, target, rs.new_shape(seg.shape, spacing, target), seg_kw, prob_kw)


def _mine(seg, spacing, target, seg_kw, prob_kw):
    out = np.zeros(seg.shape, dtype=np.int32)
    trip = rs.roundtrip(seg, spacing, target, rs.new_shape(seg.shape, spacing, target), seg_kw, prob_kw)
    if trip is not None:
        box, crop, back = trip
        assert np.array_equal(crop, seg[tuple(slice(a, b) for a, b in box)])
        out[tuple(slice(a, b) for a, b in box)] = back
    return out


def _dice(a, b, lab):
    x, y = a == lab, b == lab
    s = x.sum() + y.sum()
    return 1.0 if s == 0 else 2 * (x & y).sum() / s


CASES = [
    # name, shape, spacing, target, seg kwargs, prob kwargs
    ("anisotropic, in-plane 2x (lowres)", (12, 60, 70), [2.5, 0.7, 0.7], [2.5, 1.4, 1.4], SEG, PROB),
    ("anisotropic, ratio not whole", (10, 57, 69), [2.5, 0.7, 0.7], [2.5, 1.39, 1.41], SEG, PROB),
    ("anisotropic, z changes too", (14, 48, 52), [3.0, 0.8, 0.8], [4.1, 1.7, 1.5], SEG, PROB),
    ("isotropic 3D", (30, 34, 38), [1.0, 1.0, 1.0], [1.7, 1.6, 2.2], SEG, PROB),
    ("target anisotropic only", (30, 34, 38), [1.0, 1.0, 1.0], [3.5, 1.0, 1.1], SEG, PROB),
    ("2d configuration", (1, 80, 90), [999.0, 0.6, 0.6], [999.0, 1.3, 1.1], SEG, PROB),
    ("order_z 1 both ways", (14, 40, 44), [3.0, 0.8, 0.8], [5.0, 1.3, 1.3], dict(SEG, order_z=1), dict(PROB, order_z=1)),
    ("order 0 seg", (20, 40, 44), [1.0, 1.0, 1.0], [1.5, 1.5, 1.5], dict(SEG, order=0), PROB),
    ("forced separate z", (24, 40, 44), [1.2, 1.0, 1.0], [2.0, 1.5, 1.5], dict(SEG, force_separate_z=True),
     dict(PROB, force_separate_z=True)),
    ("separate z forbidden", (12, 48, 52), [3.0, 0.8, 0.8], [4.0, 1.6, 1.6], dict(SEG, force_separate_z=False),
     dict(PROB, force_separate_z=False)),
]


@pytest.mark.parametrize("name,shape,spacing,target,seg_kw,prob_kw", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("seed,border", [(1, False), (2, True)])
def test_round_trip_equals_nnunets_own_resampling(name, shape, spacing, target, seg_kw, prob_kw, seed, border):
    seg = _blobs(shape, 3, seed, border)
    ref = _nnunet(seg, spacing, target, seg_kw, prob_kw)
    mine = _mine(seg, spacing, target, seg_kw, prob_kw)
    differ = int(np.count_nonzero(ref != mine))
    assert differ <= max(2, seg.size // 10000), (name, differ)        # rounding-decided ties only
    for lab in range(1, 4):
        assert abs(_dice(seg, ref, lab) - _dice(seg, mine, lab)) <= 1e-3, (name, lab)


def test_the_forward_map_equals_nnunets_seg_resampling():
    """The half-way map itself (what nnU-Net trains on), not only the round trip."""
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape

    for _, shape, spacing, target, seg_kw, _p in CASES:
        seg = _blobs(shape, 3, 7)
        small_shape = rs.new_shape(shape, spacing, target)
        ref = resample_data_or_seg_to_shape(seg[None].astype(np.float32), small_shape, spacing, target, **seg_kw)[0]
        fg = [(int(np.flatnonzero(np.any(seg != 0, axis=tuple(j for j in range(3) if j != i)))[[0, -1]][0]),
               int(np.flatnonzero(np.any(seg != 0, axis=tuple(j for j in range(3) if j != i)))[-1]) + 1)
              for i in range(3)]
        th = seg_kw.get("separate_z_anisotropy_threshold", rs.ANISO_THRESHOLD)
        axis = rs.separate_axis(seg_kw.get("force_separate_z"), spacing, target, th)
        mine, _ = rs.forward(seg, fg, small_shape, axis, seg_kw, rs.seg_rule())
        assert mine.shape == ref.shape
        assert np.count_nonzero(mine != ref) <= max(2, ref.size // 10000), shape


def test_no_label_and_nnunets_helpers():
    from nnunetv2.preprocessing.resampling.default_resampling import (compute_new_shape,
                                                                       determine_do_sep_z_and_axis)

    assert rs.roundtrip(np.zeros((4, 8, 8), np.int32), [1, 1, 1], [2, 2, 2], [2, 4, 4], SEG, PROB) is None
    rng = np.random.default_rng(0)
    for _ in range(300):
        shape = [int(x) for x in rng.integers(1, 300, 3)]
        sp = [float(x) for x in rng.choice([0.5, 0.7, 0.8, 1.0, 2.5, 3.0, 5.0], 3)]
        tg = [float(x) for x in rng.uniform(0.3, 6.0, 3)]
        assert rs.new_shape(shape, sp, tg) == [int(x) for x in compute_new_shape(shape, sp, tg)]
        for force in (None, True, False):
            do, axis = determine_do_sep_z_and_axis(force, sp, tg)
            assert rs.separate_axis(force, sp, tg) == (axis if do else None), (force, sp, tg)


def test_the_installed_rule_is_recognised():
    """batchgenerators' rule for settling a voxel is read from its source; an unknown rule
    sends the round trip to nnunetv2's own functions (checked by the equality tests above)."""
    assert rs.seg_rule() in ("nearest", "threshold")
    assert rs.supported(SEG, PROB)
    assert not rs.supported(dict(SEG, order=3), PROB)


def test_the_old_threshold_rule_equals_old_batchgenerators():
    """batchgenerators before the argmax rule wrote each label whose resized indicator was
    >= 0.5, ascending (its resize_segmentation, restated here with skimage's own resize)."""
    from skimage.transform import resize

    def old_resize_segmentation(seg, new_shape, order):
        out = np.zeros(new_shape, dtype=seg.dtype)
        for c in np.unique(seg):
            m = resize((seg == c).astype(float), new_shape, order, mode="edge", clip=True, anti_aliasing=False)
            out[m >= 0.5] = c
        return out

    for seed in (1, 2, 3):
        seg = _blobs((20, 33, 41), 3, seed, border=seed == 2)
        small_shape = [13, 17, 29]
        ref = old_resize_segmentation(seg, small_shape, 1)
        maps = [rs.AxisMap(N, n, 1) for N, n in zip(seg.shape, small_shape)]
        box = [(0, n) for n in small_shape]
        mine = rs._settle(seg, np.unique(seg), maps, [m.nearest() for m in maps], box, [0, 0, 0], "threshold")
        assert np.count_nonzero(mine != ref) <= 2
