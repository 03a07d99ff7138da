"""A region-based model trained by real nnunetv2 (the `region_model` session fixture): evaluate,
ensemble and suggest on its real sigmoid region probabilities, with nnU-Net as the oracle."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataguard.workspace import Workspace

pytestmark = pytest.mark.nnunet


@pytest.fixture(autouse=True)
def _nnunet_env(region_model, monkeypatch):
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(k, region_model["env"][k])


def _ws(region_model, tmp_path) -> Workspace:
    root = region_model["root"]
    return Workspace([str(root / "nnUNet_preprocessed" / "Dataset903_Regions")], manifest_dir=tmp_path / "m")


def _read(path: Path):
    import nibabel as nib

    return np.asanyarray(nib.load(str(path)).dataobj)


def test_region_model_writes_one_sigmoid_channel_per_region(region_model):
    val = region_model["dirs"]["2d"] / "fold_0" / "validation"
    npz = sorted(val.glob("*.npz"))
    assert npz, "nnU-Net --npz wrote no probabilities"
    with np.load(npz[0]) as z:
        p = z["probabilities"]
    assert p.shape[0] == 3                    # heart, left_heart, left_ventricle: no background channel


def test_evaluate_scores_regions_as_nnunet_does(region_model, tmp_path):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder2

    ws = _ws(region_model, tmp_path)
    ev = ws.evaluate.run(["2d"])
    assert ev.labels == {1: "heart", 2: "left_heart", 3: "left_ventricle"}
    folder = region_model["dirs"]["2d"] / "fold_0" / "validation"
    pre = region_model["preprocessed"]
    out = tmp_path / "summary.json"
    compute_metrics_on_folder2(str(pre / "gt_segmentations"), str(folder), str(pre / "dataset.json"),
                               str(pre / "nnUNetPlans.json"), str(out), num_processes=1, chill=True)
    theirs = {Path(m["prediction_file"]).name[: -len(".nii.gz")]: m["metrics"]
              for m in json.loads(out.read_text())["metric_per_case"]}
    keys = {1: "(1, 2, 3)", 2: "(1, 2)", 3: "2"}
    rows = [s for s in ev.scores if s.fold == 0]
    assert rows and {s.case for s in rows} == set(theirs)
    for s in rows:
        m = theirs[s.case][keys[s.label]]
        assert s.ref_voxels == m["TP"] + m["FN"] and s.pred_voxels == m["TP"] + m["FP"]
        if s.ref_voxels:
            assert s.dice == pytest.approx(m["Dice"], abs=1e-6)


def test_equal_weight_ensemble_is_voxel_identical_to_nnunetv2_ensemble(region_model, tmp_path):
    import shutil

    dirs = region_model["dirs"]
    inputs = {}
    for c, d in dirs.items():                # nnUNetv2_ensemble wants dataset.json + plans.json in each input
        inputs[c] = shutil.copytree(d / "fold_0" / "validation", tmp_path / c)
        for f in ("dataset.json", "plans.json"):
            shutil.copy(d / f, inputs[c] / f)
    from dataguard.submit.ensemble import Weights

    ws = _ws(region_model, tmp_path)
    ours = tmp_path / "ours"
    pi, findings = ws.submit.check_probabilities(inputs)
    assert not findings, findings                 # region probabilities are not "missing a class"
    ws.submit.ensemble(pi, ours, Weights())
    theirs = tmp_path / "theirs"
    exe = str(Path(sys.executable).with_name("nnUNetv2_ensemble"))
    proc = subprocess.run([exe, "-i", *map(str, inputs.values()), "-o", str(theirs), "-np", "1"],
                          env=region_model["env"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    files = sorted(theirs.glob("*.nii.gz"))
    assert files
    values = set()
    for f in files:
        a, b = _read(f), _read(ours / f.name)
        assert np.array_equal(a, b), f.name
        values |= set(np.unique(a).tolist())
    assert values <= {0, 1, 2, 3}


def test_suggest_on_real_region_probabilities_never_loses_to_nnunets_candidates(region_model, tmp_path):
    ws = _ws(region_model, tmp_path)
    models, oof = ws.evaluate.out_of_fold(["2d", "3d_fullres"])
    assert oof.rule is not None and oof.cases
    sug, _ = ws.evaluate.suggest_weights(oof, step=0.25)
    assert set(sug.weights) == {1, 2, 3}
    assert sug.chosen_mean >= max(c.mean for c in sug.candidates) - 1e-12


def test_submit_predicts_and_ensembles_a_region_model_end_to_end(region_model, tmp_path):
    import zipfile

    from conftest import dataguard_cli, held_out

    root = region_model["root"]
    ts = tmp_path / "imagesTs"
    ts.mkdir()
    for c in ("heart_000", "heart_005"):
        held_out(root / f"nnUNet_raw/Dataset903_Regions/imagesTr/{c}_0000.nii.gz", ts)
    out = dataguard_cli(["submit", "-d", "903", "--images", str(ts), "-o", str(tmp_path / "sub.zip"),
                         "--model", "2d:0", "--model", "3d_fullres:0", "--device", "cpu", "--no-tta"],
                        region_model["env"], root)
    assert out.returncode == 0, out.stdout + out.stderr
    with zipfile.ZipFile(tmp_path / "sub.zip") as zf:
        assert sorted(zf.namelist()) == ["heart_000.nii.gz", "heart_005.nii.gz"]
    for c in ("heart_000", "heart_005"):
        import nibabel as nib

        arr = np.asanyarray(nib.load(tmp_path / "sub.zip.work" / "ensemble" / f"{c}.nii.gz").dataobj)
        assert set(np.unique(arr)) <= {0, 1, 2, 3}         # regions_class_order's values, no more
