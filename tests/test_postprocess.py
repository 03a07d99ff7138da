"""Post-processing decided on out-of-fold predictions (evaluate/postprocess.py) against nnU-Net's
own `determine_postprocessing` on the same files: the same operations kept, the same Dice
before and after (to 1e-9). Hand-made predictions where the largest-component rule helps one
label (a stray blob), hurts another (a label drawn in two pieces) and leaves a third alone."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dataguard.evaluate import postprocess as pp

LABELS = {1: "myocardium", 2: "left_ventricle", 3: "right_ventricle"}


def make_cases(n: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ref = np.zeros((10, 32, 32), np.uint8)
        ref[2:8, 4:14, 4:14] = 1
        ref[2:8, 4:8, 20:24] = 2                           # label 2 in two pieces, far apart
        ref[2:8, 26:30, 20:24] = 2
        if i % 4:
            ref[2:8, 4:14, 14:18] = 3                      # beside label 1 (touching)
        pred = ref.copy()
        dy, dx = (int(v) for v in rng.integers(-1, 2, 2))
        pred[pred == 1] = 0
        pred[2:8, 4 + dy:14 + dy, 4 + dx:13 + dx] = np.where(pred[2:8, 4 + dy:14 + dy, 4 + dx:13 + dx] == 0, 1,
                                                             pred[2:8, 4 + dy:14 + dy, 4 + dx:13 + dx])
        if i % 2 == 0:
            pred[1:3, 28:31, 2:5] = 1                      # a stray blob of label 1
        if i % 4 == 0:
            pred[7:9, 28:31, 28:31] = 3                    # label 3 predicted where the case has none
        out.append((f"case_{i:03d}", ref, pred))
    return out


def test_keep_largest_equals_nnunets():
    from nnunetv2.postprocessing.remove_connected_components import (
        remove_all_but_largest_component_from_segmentation as theirs)

    for _, ref, pred in make_cases():
        for labs in ([1, 2, 3], [1], [2], [3]):
            mine = pp.keep_largest(pred, labs)
            want = theirs(pred, labs if len(labs) > 1 else labs[0])
            assert np.array_equal(mine, want), labs
    tie = np.zeros((4, 10, 10), np.uint8)
    tie[1, 1:3, 1:3] = 1
    tie[1, 6:8, 6:8] = 1                                   # two components of the same size: both kept
    assert np.array_equal(pp.keep_largest(tie, [1]), theirs(tie, 1))


@pytest.mark.nnunet
def test_decision_equals_nnunets_determine_postprocessing(tmp_path):
    import SimpleITK as sitk
    from nnunetv2.postprocessing.remove_connected_components import determine_postprocessing

    ref_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    trials = []
    for case, ref, pred in make_cases():
        for folder, arr in ((ref_dir, ref), (pred_dir, pred)):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing((1.0, 1.0, 2.5))
            sitk.WriteImage(img, str(folder / f"{case}.nii.gz"))
        trials.append(pp.trial(case, ref, pred, list(LABELS)))
    dj = {"labels": {"background": 0, **{v: k for k, v in LABELS.items()}}, "file_ending": ".nii.gz",
          "channel_names": {"0": "CT"}, "numTraining": 8}
    plans = {"dataset_name": "Dataset001_X", "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
             "label_manager": "LabelManager", "configurations": {}, "transpose_forward": [0, 1, 2],
             "transpose_backward": [0, 1, 2], "original_median_spacing_after_transp": [2.5, 1, 1],
             "original_median_shape_after_transp": [10, 32, 32], "experiment_planner_used": "x",
             "foreground_intensity_properties_per_channel": {}}
    fns, kwargs = determine_postprocessing(str(pred_dir), str(ref_dir), plans, dj, num_processes=1,
                                           keep_postprocessed_files=False)
    theirs = json.loads((pred_dir / "postprocessing.json").read_text())
    mine = pp.decide(trials, LABELS)
    want_fg = any(k["labels_or_regions"] == [1, 2, 3] for k in kwargs)
    want_per = [k["labels_or_regions"] for k in kwargs if not isinstance(k["labels_or_regions"], list)]
    assert mine.largest_foreground == want_fg
    assert mine.largest_per_label == want_per
    assert mine.largest_per_label == [1] and not mine.largest_foreground      # the case built to show it
    for lab in LABELS:
        assert mine.before[lab] == pytest.approx(theirs["input_folder"]["mean"][str(lab)]["Dice"], abs=1e-9)
        assert mine.after[lab] == pytest.approx(theirs["postprocessed"]["mean"][str(lab)]["Dice"], abs=1e-9)
    # what the decision applies is what nnU-Net applies
    from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing

    for case, _, pred in make_cases():
        assert np.array_equal(mine.apply(pred), apply_postprocessing(pred, fns, kwargs)), case


def test_decision_file_round_trip_and_hostile_files():
    dec = pp.decide([pp.trial(c, r, p, list(LABELS)) for c, r, p in make_cases()], LABELS, source="2d")
    doc = json.loads(json.dumps(dec.to_json()))
    back = pp.Decision.from_json(doc, LABELS)
    assert (back.largest_foreground, back.largest_per_label) == (dec.largest_foreground, dec.largest_per_label)
    assert [s["kept"] for s in doc["steps"]] == [False, True, False, False]
    for bad in ({}, {"format": "x"}, {**doc, "largest_per_label": ["liver"]}, {**doc, "largest_foreground": "yes"},
                [1, 2]):
        with pytest.raises(ValueError):
            pp.Decision.from_json(bad, LABELS)


def _nnunet_decision(model_dir, gt_dir, tmp):
    """nnU-Net's determine_postprocessing on a model's cross-validation (every fold's validation
    label maps in one folder, as find_best_configuration gathers them)."""
    import shutil

    from nnunetv2.postprocessing.remove_connected_components import determine_postprocessing

    tmp.mkdir()
    for f in model_dir.glob("fold_*/validation/*.nii.gz"):
        shutil.copy(f, tmp / f.name)
    _, kwargs = determine_postprocessing(str(tmp), str(gt_dir), str(model_dir / "plans.json"),
                                         str(model_dir / "dataset.json"), num_processes=1,
                                         keep_postprocessed_files=False)
    return kwargs, json.loads((tmp / "postprocessing.json").read_text())


@pytest.mark.nnunet
def test_ensemble_postprocess_on_trained_models_equals_nnunet_and_submit_applies_it(trained_models, tmp_path):
    import shutil

    import SimpleITK as sitk

    from conftest import dataguard_cli
    from dataguard.submit.ensemble import Weights, combine, read_probabilities

    root, env = trained_models["root"], trained_models["env"]
    gt = root / "nnUNet_preprocessed" / "Dataset901_DemoCardiac" / "gt_segmentations"
    pp_file = tmp_path / "pp.json"
    out = dataguard_cli(["ensemble", "postprocess", "-d", "901", "--model", "2d", "-o", str(pp_file),
                         "--format", "json"], env, root)
    assert out.returncode == 0, out.stdout + out.stderr
    mine = json.loads(out.stdout)
    kwargs, theirs = _nnunet_decision(trained_models["trainer_dirs"]["2d"], gt, tmp_path / "nn")
    names = {str(k): v for k, v in LABELS.items()}
    assert mine["largest_foreground"] == any(isinstance(k["labels_or_regions"], list) for k in kwargs)
    assert mine["largest_per_label"] == [names[str(k["labels_or_regions"])] for k in kwargs
                                         if not isinstance(k["labels_or_regions"], list)]
    for key, name in names.items():
        for side, mean in (("input_folder", "mean_dice_before"), ("postprocessed", "mean_dice_after")):
            want = theirs[side]["mean"][key]["Dice"]
            got = mine[mean][name]
            assert (got is None and want != want) or got == pytest.approx(want, abs=1e-9), (key, side)
    # the ensemble of both models, decided on their combined --npz probabilities, then applied by
    # `dataguard ensemble --postprocess pp.json` exactly
    both = dataguard_cli(["ensemble", "postprocess", "-d", "901", "--model", "2d", "--model", "3d_fullres",
                          "-o", str(pp_file)], dict(env, COLUMNS="80"), root)
    assert both.returncode == 0 and "largest foreground component" in both.stdout, both.stdout + both.stderr
    assert all(len(line) <= 80 for line in both.stdout.splitlines() if not line.startswith("wrote "))
    decision = pp.load_decision(pp_file)
    a, b = tmp_path / "a", tmp_path / "b"
    for d, config in ((a, "2d"), (b, "3d_fullres")):
        src = trained_models["trainer_dirs"][config]
        shutil.copytree(src / "fold_1" / "validation", d)
        for f in ("dataset.json", "plans.json"):
            shutil.copy(src / f, d / f)
    res = dataguard_cli(["ensemble", "-i", str(a), "-i", str(b), "-o", str(tmp_path / "ens"), "--postprocess",
                         str(pp_file)], env, root)
    assert res.returncode == 0 and "decided out of fold" in res.stdout, res.stdout + res.stderr
    for npz in sorted(a.glob("*.npz")):
        probs = [read_probabilities(npz), read_probabilities(b / npz.name)]
        seg, _ = combine(probs, Weights.load(None, ["a", "b"]).matrix(["a", "b"], probs[0].shape[0]))
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ens" / f"{npz.stem}.nii.gz")))
        assert np.array_equal(written, decision.apply(seg)), npz.name
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(pp_file.read_text()), "labels": {"1": "liver"},
                               "largest_per_label": ["liver"]}))
    refused = dataguard_cli(["ensemble", "-i", str(a), "-i", str(b), "-o", str(tmp_path / "ens2"), "--postprocess",
                             str(bad)], env, root)
    assert refused.returncode == 2 and "liver" in refused.stderr and not (tmp_path / "ens2").exists()
