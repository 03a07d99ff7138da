"""Regions and the ignore label in `evaluate`, against nnU-Net's own compute_metrics_on_folder2.

Real NIfTI label maps (nibabel) in a reference and a prediction folder; nnU-Net scores them
with its LabelManager (regions, ignore) and writes summary.json; dataguard's per-case Dice
must equal nnU-Net's to 1e-6 wherever the reference holds the class.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dataguard.evaluate.crossval import evaluate, fold_sources, foreground_labels
from dataguard.spec import parse_spec

pytestmark = pytest.mark.nnunet

REGIONS = {"channel_names": {"0": "T1"}, "file_ending": ".nii.gz", "numTraining": 6,
           "labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing": 3},
           "regions_class_order": [1, 2, 3]}
IGNORE = {"channel_names": {"0": "CT"}, "file_ending": ".nii.gz", "numTraining": 6,
          "labels": {"background": 0, "liver": 1, "spleen": 2, "ignore": 3}}
PLANS = {"plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO", "label_manager": "LabelManager",
         "configurations": {}}


def _nested_blobs(rng, shape=(24, 20, 6)) -> np.ndarray:
    """BraTS-like nesting: whole tumour (1) around a core (2) around enhancing (3)."""
    z, y, x = np.indices(shape)
    c = [rng.integers(6, s - 6) if s > 12 else s // 2 for s in shape]
    d = np.sqrt(((z - c[0]) / 1.0) ** 2 + ((y - c[1]) / 1.0) ** 2 + ((x - c[2]) / 0.6) ** 2)
    r = rng.uniform(4, 7)
    lab = np.zeros(shape, np.uint8)
    lab[d < r] = 1
    lab[d < r * 0.6] = 2
    lab[d < r * 0.3] = 3
    return lab


def _write(folder: Path, case: str, arr: np.ndarray) -> None:
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.diag([1.0, 1.0, 2.0, 1.0])), folder / f"{case}.nii.gz")


def _folders(tmp_path: Path, dataset: dict, make) -> tuple[Path, Path, list[str]]:
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    rng = np.random.default_rng(7)
    cases = [f"case_{i}" for i in range(6)]
    for c in cases:
        r, p = make(rng)
        _write(ref, c, r)
        _write(pred, c, p)
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))
    (tmp_path / "plans.json").write_text(json.dumps(PLANS))
    return ref, pred, cases


def _nnunet_per_case(tmp_path: Path, ref: Path, pred: Path) -> dict[str, dict[str, dict]]:
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder2

    out = tmp_path / "summary.json"
    compute_metrics_on_folder2(str(ref), str(pred), str(tmp_path / "dataset.json"), str(tmp_path / "plans.json"),
                               str(out), num_processes=1)
    summary = json.loads(out.read_text())
    return {Path(m["reference_file"]).name[: -len(".nii.gz")]: m["metrics"] for m in summary["metric_per_case"]}


def _ours(dataset: dict, ref: Path, pred: Path, cases: list[str]):
    spec = parse_spec(dataset)
    labels = foreground_labels(spec)
    splits = [{"train": [], "val": cases}]
    return evaluate("Dataset001_X", ref, labels, fold_sources("m", {0: pred}, splits), jobs=1, spec=spec), spec


def _compare(ev, theirs: dict, keys: dict[int, str]) -> int:
    """Every (case, class) nnU-Net scored with a reference present matches ours; returns how many."""
    n = 0
    for s in ev.scores:
        m = theirs[s.case][keys[s.label]]
        assert s.ref_voxels == m["TP"] + m["FN"] and s.pred_voxels == m["TP"] + m["FP"], (s, m)
        if s.ref_voxels:
            assert s.dice == pytest.approx(m["Dice"], abs=1e-6), (s, m)
            n += 1
        else:
            assert s.dice is None          # absent: not a 0 (nnU-Net says nan, or 0 for a false positive)
    return n


def test_region_dice_equals_nnunet_compute_metrics_on_folder2(tmp_path):
    def make(rng):
        ref = _nested_blobs(rng)
        pred = _nested_blobs(rng)             # another tumour: partial overlap
        pred[ref == 3] = rng.choice([2, 3], size=int((ref == 3).sum()))
        return ref, pred
    ref, pred, cases = _folders(tmp_path, REGIONS, make)
    ev, spec = _ours(REGIONS, ref, pred, cases)
    assert ev.labels == {1: "whole_tumor", 2: "tumor_core", 3: "enhancing"}
    theirs = _nnunet_per_case(tmp_path, ref, pred)
    # nnU-Net keys regions by the str of their tuple: "(1, 2, 3)"
    keys = {k: str(tuple(v)) if len(v) > 1 else str(v[0]) for k, (_, v) in spec.classes.items()}
    assert set(next(iter(theirs.values()))) == set(keys.values())
    assert _compare(ev, theirs, keys) == 18
    whole = ev.per_label("m")[1]["mean_dice"]
    assert 0.05 < whole < 0.99                 # a real partial overlap, not a trivial 0 or 1


def test_ignore_voxels_count_nowhere_as_in_nnunet(tmp_path):
    """The issue's case: outer columns marked ignore; the model predicts liver there."""
    def make(rng):
        ref = np.zeros((24, 20, 6), np.uint8)
        ref[6:18, 5:15] = 1
        ref[2:5, 2:6] = 2
        ref[:, :3] = 3                        # sparse annotation: the outer columns are unlabelled
        ref[:, -3:] = 3
        pred = np.zeros_like(ref)
        pred[6:18, 5:15] = 1
        pred[:, :3] = 1                       # liver predicted where nobody annotated
        pred[rng.integers(6, 18), 5:15] = 0   # and a row missed
        pred[2:5, 2:5] = 2
        return ref, pred
    ref, pred, cases = _folders(tmp_path, IGNORE, make)
    ev, spec = _ours(IGNORE, ref, pred, cases)
    assert ev.labels == {1: "liver", 2: "spleen"} and ev.ignore == 3
    theirs = _nnunet_per_case(tmp_path, ref, pred)
    assert _compare(ev, theirs, {1: "1", 2: "2"}) == 12
    liver = ev.per_label("m")[1]["mean_dice"]
    # without the mask the ignore columns would be false positives: the masked Dice is higher
    from dataguard.evaluate.crossval import overlap, read_labels
    tp, r, p = overlap(read_labels(ref / "case_0.nii.gz"), read_labels(pred / "case_0.nii.gz"), [1])[1]
    assert 2 * tp / (r + p) < liver - 0.05


def test_plain_labels_score_as_before_and_as_nnunet(tmp_path):
    plain = {**IGNORE, "labels": {"background": 0, "liver": 1, "spleen": 2}}

    def make(rng):
        ref = _nested_blobs(rng) % 3
        pred = _nested_blobs(rng) % 3
        return ref, pred
    ref, pred, cases = _folders(tmp_path, plain, make)
    ev, _ = _ours(plain, ref, pred, cases)
    assert ev.ignore is None and ev.values == {1: (1,), 2: (2,)}
    assert _compare(ev, _nnunet_per_case(tmp_path, ref, pred), {1: "1", 2: "2"}) >= 10


def test_malformed_regions_are_a_usage_error_not_a_wrong_score():
    from dataguard.errors import UsageError

    spec = parse_spec({**REGIONS, "regions_class_order": [1, 2]})
    with pytest.raises(UsageError, match="regions_class_order"):
        foreground_labels(spec)
