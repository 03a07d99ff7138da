"""Region-based ensembling and weight search, against nnU-Net's own ensembling functions.

nnU-Net's `average_probabilities` + `LabelManager.convert_probabilities_to_segmentation` on real
`.npz` files is the oracle for equal weights; the pruned region search must equal the search
over every voxel, and never lose to nnU-Net's candidates.
"""
from __future__ import annotations

import numpy as np
import pytest

from dataguard.evaluate.region_weights import (
    RegionRule,
    reduce_region_case,
    region_rule,
    search_regions,
)
from dataguard.evaluate.weights import OOF, reduce_case, search
from dataguard.spec import parse_spec
from dataguard.submit.ensemble import Weights, combine, read_probabilities

REGIONS = {"channel_names": {"0": "T1"}, "file_ending": ".nii.gz",
           "labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing": 3},
           "regions_class_order": [1, 2, 3]}
RULE = region_rule(parse_spec(REGIONS))


def _nested(rng, shape=(6, 16, 16)):
    z, y, x = np.indices(shape)
    c = [s / 2 + rng.uniform(-2, 2) for s in shape]
    d = np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
    lab = np.zeros(shape, np.uint8)
    r = rng.uniform(4, 6)
    lab[d < r] = 1
    lab[d < 0.65 * r] = 2
    lab[d < 0.3 * r] = 3
    return lab


def _sigmoid_probs(rng, ref, noise: float, drop_region: int | None = None):
    """Region probabilities (R, ...) float16 that roughly match `ref`; one region can be wrong."""
    out = []
    for k, vals in RULE.values.items():
        truth = np.isin(ref, vals).astype(np.float32)
        p = np.clip(truth * 0.8 + 0.1 + rng.normal(0, noise, ref.shape), 0, 1)
        if drop_region == k:
            p = np.clip(rng.uniform(0, 0.7, ref.shape) * (1 - truth) + 0.2 * truth, 0, 1)
        out.append(p)
    return np.stack(out).astype(np.float16)


def _oof(n_cases=5, seed=0):
    rng = np.random.default_rng(seed)
    oof = OOF(["good", "bad"], {1: "whole_tumor", 2: "tumor_core", 3: "enhancing"}, [])
    for i in range(n_cases):
        ref = _nested(rng)
        c = f"c{i}"
        oof.cases.append(c)
        oof.refs[c] = ref
        oof.probs[c] = [_sigmoid_probs(rng, ref, 0.15), _sigmoid_probs(rng, ref, 0.3, drop_region=3)]
    return oof


def test_equal_weights_are_voxel_identical_to_nnunet_ensemble(tmp_path):
    from nnunetv2.ensembling.ensemble import average_probabilities
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    rng = np.random.default_rng(3)
    ref = _nested(rng)
    files = []
    for m in range(3):
        p = tmp_path / f"m{m}.npz"
        np.savez_compressed(p, probabilities=_sigmoid_probs(rng, ref, 0.25))
        files.append(str(p))
    lm = LabelManager(REGIONS["labels"], REGIONS["regions_class_order"])
    theirs = lm.convert_probabilities_to_segmentation(average_probabilities(files))
    probs = [read_probabilities(f) for f in files]
    ours, _ = combine(probs, Weights().matrix(["a", "b", "c"], 3, regions=True), RULE.order)
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    assert len(np.unique(ours)) == 4            # every region value occurs: not a trivial map


def test_region_weights_are_keyed_by_region_and_applied_per_channel():
    w = Weights.parse({"labels": {"3": {"a": 1.0, "b": 0.0}}}, ["a", "b"])
    m = w.matrix(["a", "b"], 3, regions=True)
    assert m[:, 2].tolist() == [1.0, 0.0] and m[:, 0].tolist() == [1.0, 1.0]


def test_pruned_region_search_equals_the_search_over_every_voxel():
    oof = _oof()
    pruned, full = search_regions(oof, RULE), search_regions(oof, RULE, prune=False)
    assert pruned.weights == full.weights and pruned.chosen == full.chosen
    assert pruned.contested < pruned.voxels / 2          # most voxels are decided by every model alike


def test_region_search_never_loses_to_nnunets_candidates_and_fixes_the_bad_region():
    oof = _oof()
    sug = search_regions(oof, RULE)
    assert sug.chosen_mean >= max(c.mean for c in sug.candidates) - 1e-12
    # the "bad" model is useless on enhancing: its weight there must not be the larger one
    assert sug.weights[3][0] >= sug.weights[3][1]
    assert set(sug.weights) == {1, 2, 3} and set(sug.weights_file()["labels"]) == {"1", "2", "3"}


def test_a_region_voxel_every_model_decides_alike_is_fixed():
    ref = np.array([[[3, 0, 1]]], np.uint8)
    high = np.full((3, 1, 1, 3), 0.9, np.float32)
    low = np.full((3, 1, 1, 3), 0.1, np.float32)
    p1 = np.where(np.isin(ref, [1, 2, 3])[None], high, low)
    p2 = p1.copy()
    p2[:, 0, 0, 2] = [0.9, 0.45, 0.2]                 # voxel 2: models disagree on tumor_core
    p1[:, 0, 0, 2] = [0.9, 0.55, 0.2]
    cv = reduce_region_case("c", [p1, p2], ref, RULE)
    assert cv.contested == 1 and cv.voxels == 3


def test_ignore_voxels_count_nowhere_in_the_plain_search():
    """An ignore label (max+1) in the reference: those voxels are neither reference nor error."""
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 3, size=(4, 8, 8)).astype(np.uint8)
    ref[:, :, :2] = 3                                 # ignore
    probs = [np.eye(3, dtype=np.float32)[np.where(ref == 3, 1, ref)].transpose(3, 0, 1, 2)]
    cv = reduce_case("c", probs, ref, ignore=3)
    assert cv.voxels == ref.size and int(cv.fixed_pred.sum()) == int((ref != 3).sum())
    oof = OOF(["m", "n"], {1: "a", 2: "b"}, ["c"], probs={"c": probs * 2}, refs={"c": ref}, ignore=3)
    assert search(oof).chosen == {1: 1.0, 2: 1.0}      # label 1 predicted under ignore: not a false positive


def test_region_rule_follows_the_spec():
    assert RULE == RegionRule({1: (1, 2, 3), 2: (2, 3), 3: (3,)}, (1, 2, 3), None)
    assert region_rule(parse_spec({**REGIONS, "labels": {"background": 0, "a": 1}})) is None


@pytest.mark.parametrize("seed", [5, 9])
def test_region_search_on_other_data_stays_exact(seed):
    oof = _oof(4, seed)
    a, b = search_regions(oof, RULE, step=0.25), search_regions(oof, RULE, step=0.25, prune=False)
    assert a.weights == b.weights and a.chosen == b.chosen
