"""Inputs that look almost right: nnU-Net env vars pointing at files, a label without its image,
a symlink inside a submission zip. Each must be named for what it is, and nothing downstream
(the train gate, the splits, the archive check) may act as if it were fine."""
from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import pytest

import dataguard
from conftest import codes, dataguard_cli, predicted_split, train_env

M = "Dataset901_DemoCardiac"


# --- 1. the train gate reads the folders nnU-Net will read ------------------------------------------
def dry(root: Path, env: dict, fold: str = "1"):
    return dataguard_cli(["train", "901", "2d", fold, "--device", "cpu", "--dry-run"], env, root)


@pytest.mark.nnunet
@pytest.mark.parametrize("var", ["nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"])
def test_train_gate_refuses_an_nnunet_env_var_that_points_at_a_file(real_project, var):
    # the sibling nnUNet_preprocessed / nnUNet_results folders are still there: the gate must not use them
    file = real_project / f"{var}.txt"
    file.write_text("not a folder")
    out = dry(real_project, {**train_env(real_project), var: str(file)})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "REFUSED" in out.stdout and "PASS" not in out.stdout
    assert f"DG902: {var}={file} is a file, not a folder" in " ".join(out.stdout.split())   # wrapped at 80
    assert f"fix: export {var}=" in out.stdout


@pytest.mark.nnunet
def test_train_gate_unchanged_when_the_env_vars_are_right(real_project):
    env = train_env(real_project)
    out = dry(real_project, env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASS: training may start" in out.stdout and "DG902" not in out.stdout
    # nnU-Net creates a missing results folder itself: not a refusal
    fresh = dry(real_project, {**env, "nnUNet_results": str(real_project / "new" / "results")})
    assert fresh.returncode == 0 and "DG902" not in fresh.stdout, fresh.stdout + fresh.stderr
    assert not (real_project / "new").exists()                     # a dry run creates nothing


@pytest.mark.nnunet
@pytest.mark.parametrize("var", ["nnUNet_preprocessed", "nnUNet_results"])
def test_train_gate_refuses_a_needed_env_var_unset(real_project, var):
    env = train_env(real_project)
    env.pop(var)
    out = dry(real_project, env)
    assert out.returncode == 1 and f"DG902: {var} is not set" in out.stdout, out.stdout + out.stderr


def test_dg902_is_explained():
    out = dataguard_cli(["explain", "DG902"], None, Path.cwd())
    assert out.returncode == 0 and out.stdout.startswith("DG902") and "nnUNet_results" in out.stdout


# --- 2. a label without image is no training case ---------------------------------------------------
def add_orphan(root: Path) -> Path:
    raw = root / "nnUNet_raw" / M
    orphan = raw / "labelsTr" / "orphan01.nii.gz"
    orphan.write_bytes((raw / "labelsTr" / "heart_000.nii.gz").read_bytes())
    return orphan


@pytest.mark.nnunet
def test_label_without_image_is_one_dg303_and_no_training_case(real_project, tmp_path):
    add_orphan(real_project)
    res = dataguard.scan([str(real_project / "nnUNet_preprocessed" / M)], manifest_dir=tmp_path / "m", jobs=1)
    [f] = codes(res, "DG303")
    assert f.case == "orphan01" and f.path == "raw/labelsTr/orphan01.nii.gz"
    assert "imagesTr/orphan01_0000.nii.gz is missing" in f.message
    assert not codes(res, "DG305")                        # numTraining (8) counts cases with images, as nnU-Net does
    assert not [x for x in res.findings if x.case == "orphan01" and x.code != "DG303"]   # one finding, no DG207
    [dg505] = codes(res, "DG505")
    assert "over the 8 training cases" in dg505.message
    assert not any("orphan01" in x.message for x in res.findings if predicted_split(x))


@pytest.mark.nnunet
def test_label_without_image_stays_out_of_rebalanced_and_repaired_splits(real_project, tmp_path):
    add_orphan(real_project)
    pre = real_project / "nnUNet_preprocessed" / M
    env = train_env(real_project)
    out = dataguard_cli(["splits", "rebalance", str(pre), "--dry-run", "--format", "json",
                         "--manifest-dir", str(tmp_path / "m")], env, real_project)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["after"]["cases"] == 8
    assert all(f["n_train"] + f["n_val"] == 8 for f in doc["after"]["folds"])
    assert not (pre / "splits_final.json").exists()
    rep = dataguard_cli(["repair", str(pre), "--select", "DG5", "--yes", "--fail-on", "never",
                        "--manifest-dir", str(tmp_path / "m")], env, real_project)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    splits = json.loads((pre / "splits_final.json").read_text())
    in_splits = {c for fold in splits for part in ("train", "val") for c in fold[part]}
    assert len(in_splits) == 8 and "orphan01" not in in_splits


# --- 3. a symlink inside a submission zip -----------------------------------------------------------
@pytest.fixture
def sub(tmp_path):
    """2 test images and their correct predictions, real NIfTI."""
    import nibabel as nib
    import numpy as np

    images, preds = tmp_path / "imagesTs", tmp_path / "pred"
    images.mkdir(), preds.mkdir()
    affine = np.diag([1.25, 1.25, 8.0, 1.0])
    for i in range(2):
        lab = np.zeros((8, 8, 4), np.uint8)
        lab[2:5, 2:5, 1:3] = 1
        nib.save(nib.Nifti1Image(lab.astype(np.float32), affine), str(images / f"case_{i}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(lab, affine), str(preds / f"case_{i}.nii.gz"))
    return tmp_path


def test_check_submission_names_a_symlink_member(sub):
    archive = sub / "links.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(sub / "pred" / "case_0.nii.gz", "case_0.nii.gz")
        link = zipfile.ZipInfo("case_1.nii.gz")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "../pred/case_1.nii.gz")
    out = dataguard_cli(["check-submission", str(archive), "--images", str(sub / "imagesTs")],
                        {**os.environ, "COLUMNS": "400"}, sub)
    assert out.returncode == 1, out.stdout + out.stderr
    [row] = [line for line in out.stdout.splitlines() if "DG606" in line]
    assert "case_1.nii.gz" in row and "symbolic link to '../pred/case_1.nii.gz'" in row
    assert "NIfTI" not in out.stdout and "too short" not in out.stdout
