"""An unfinished fold never reaches a submission unless asked, one checkpoint from validation to
submission, and the commands about trained models answer mistakes clearly (issue 29: items 2,
3, 10, 12, 13). Real nnunetv2: the session's tiny models, plus a fold 2 of the 2d model made
the way Ctrl-C leaves one (checkpoint_latest/best, no checkpoint_final.pth, no validation)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import dataguard_cli, held_out, train_env

DS = "Dataset901_DemoCardiac"
R2D = f"nnUNet_results/{DS}/nnUNetTrainer_dataguard__nnUNetPlans__2d"
R3D = f"nnUNet_results/{DS}/nnUNetTrainer_dataguard__nnUNetPlans__3d_fullres"


def interrupted(root: Path, fold: str = "2", src: str = "1") -> Path:
    """fold_<fold> of the 2d model as an interrupted run leaves it: a copy of a trained fold
    without checkpoint_final.pth and without its validation folder."""
    f = root / R2D / f"fold_{fold}"
    shutil.copytree(root / R2D / f"fold_{src}", f, symlinks=True)
    (f / "checkpoint_final.pth").unlink()
    shutil.rmtree(f / "validation")
    shutil.copy(f / "checkpoint_best.pth", f / "checkpoint_latest.pth")
    return f


@pytest.fixture(scope="module")
def project(trained_models, tmp_path_factory):
    """A copy of the trained project with an interrupted fold 2 of the 2d model, and two
    held-out test images. Read-only for the tests."""
    root = tmp_path_factory.mktemp("unfinished") / "project"
    shutil.copytree(trained_models["root"], root, symlinks=True)
    interrupted(root)
    ts = root / "imagesTs"
    ts.mkdir()
    for c in ("heart_000", "heart_005"):
        held_out(root / f"nnUNet_raw/{DS}/imagesTr/{c}_0000.nii.gz", ts)
    return {"root": root, "env": {**train_env(root), "COLUMNS": "80"}, "images": ts}


def cli(p, *args, env=None):
    return dataguard_cli(list(args), env or p["env"], p["root"])


def submit(p, out: Path, *extra):
    return cli(p, "submit", "-d", "901", "--images", str(p["images"]), "-o", str(out), *extra)


# --- the fold model, without nnU-Net ------------------------------------------------------------
def test_a_fold_is_finished_only_with_a_regular_final_checkpoint(tmp_path):
    from dataguard.submit.trained import choose_folds, fold_names, fold_state

    t = tmp_path / "nnUNetTrainer__nnUNetPlans__2d"
    for k in ("0", "1", "2"):
        (t / f"fold_{k}").mkdir(parents=True)
    (t / "fold_0" / "checkpoint_final.pth").write_bytes(b"x")
    (t / "fold_1" / "checkpoint_best.pth").write_bytes(b"x")
    (t / "fold_2" / "checkpoint_final.pth").symlink_to(t / "fold_0" / "checkpoint_final.pth")
    outside = tmp_path / "elsewhere"
    (outside / "fold_9").mkdir(parents=True)
    (outside / "fold_9" / "checkpoint_final.pth").write_bytes(b"x")
    (t / "fold_3").symlink_to(outside / "fold_9")
    assert fold_names(t) == ["0", "1", "2", "3"]
    assert fold_state(t, "0").finished
    assert "no checkpoint_final.pth" in fold_state(t, "1").why
    assert "symbolic link" in fold_state(t, "2").why and not fold_state(t, "2").finished
    assert "symbolic link" in fold_state(t, "3").why and not fold_state(t, "3").usable
    choice = choose_folds(t, ["0", "1", "2", "3"])
    assert [s.fold for s in choice.used] == ["0"] and [s.fold for s in choice.skipped] == ["1", "2", "3"]
    asked = choose_folds(t, ["0", "1", "2", "3"], include_unfinished=True)
    assert [s.fold for s in asked.used] == ["0", "1", "2"] and [s.fold for s in asked.skipped] == ["3"]


def test_weights_files_record_their_checkpoint():
    from dataguard.errors import UsageError
    from dataguard.submit.ensemble import Weights

    assert Weights.parse({"default": {"a": 1, "b": 1}}, ["a", "b"]).tuned_on == "final"
    w = Weights.parse({"default": {"a": 1, "b": 1}, "checkpoint": "best"}, ["a", "b"])
    assert w.tuned_on == "best" and w.to_dict()["checkpoint"] == "best"
    with pytest.raises(UsageError, match="checkpoint"):
        Weights.parse({"default": {"a": 1, "b": 1}, "checkpoint": "latest"}, ["a", "b"])


# --- item 2: an unfinished fold goes into no submission unless asked ----------------------------
@pytest.mark.nnunet
def test_submit_skips_an_unfinished_fold_says_so_and_records_it(project, tmp_path):
    out = submit(project, tmp_path / "a.zip", "--model", "2d:1,2", "--device", "cpu", "--no-tta")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "skipped fold 2 (no checkpoint_final.pth" in " ".join(out.stderr.split())
    assert "DG806" in out.stdout and "--continue" in out.stdout
    man = json.loads((tmp_path / "a.zip.manifest.json").read_text())
    m = man["models"][0]
    assert m["folds"] == ["1"] and [s["fold"] for s in m["folds_skipped"]] == ["2"]
    assert man["include_unfinished"] is False and man["checkpoint"] == "final" == m["checkpoint"]
    assert all(p.endswith("fold_1/checkpoint_final.pth") for p in m["checkpoints_blake3"])
    # on purpose: the flag, a checkpoint the unfinished fold has, and the manifest says so
    refused = submit(project, tmp_path / "b.zip", "--model", "2d:1,2", "--device", "cpu", "--include-unfinished")
    assert refused.returncode == 2 and "--checkpoint best" in refused.stderr, refused.stderr
    asked = submit(project, tmp_path / "c.zip", "--model", "2d:1,2", "--device", "cpu", "--no-tta",
                   "--include-unfinished", "--checkpoint", "best")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert "folds 1, 2 (unfinished)" in asked.stderr and "DG806" in asked.stdout
    man = json.loads((tmp_path / "c.zip.manifest.json").read_text())
    assert man["include_unfinished"] is True and man["checkpoint"] == "best"
    assert man["models"][0]["folds"] == ["1", "2"] and man["models"][0]["unfinished_folds_used"] == ["2"]
    assert all(p.endswith("checkpoint_best.pth") for p in man["models"][0]["checkpoints_blake3"])


@pytest.mark.nnunet
def test_a_model_without_a_finished_fold_is_refused_with_the_resume_line(project, tmp_path):
    for args in (["submit", "-d", "901", "--images", str(project["images"]), "-o", str(tmp_path / "x.zip"),
                  "--model", "2d:2", "--device", "cpu"],
                 ["evaluate", "-d", "901", "--model", "2d:2"],
                 ["ensemble", "suggest", "-d", "901", "--model", "2d:2", "--model", "3d_fullres"]):
        out = cli(project, *args)
        assert out.returncode == 2, out.stdout + out.stderr
        err = " ".join(out.stderr.split())
        assert "no finished fold" in err and "fold 2: no checkpoint_final.pth" in err
        assert f"dataguard train {DS} 2d 2 --continue --device cpu" in err and "--include-unfinished" in err
        assert "-device cuda" not in err and "--device cuda" not in err
    assert not (tmp_path / "x.zip").exists()


@pytest.mark.nnunet
def test_evaluate_scores_finished_folds_and_names_the_unfinished_one(project):
    out = cli(project, "evaluate", "-d", "901", "--model", "2d")
    assert out.returncode == 0, out.stdout + out.stderr          # was: exit 1, DG802 on fold 2
    assert "DG802" not in out.stdout and "DG806" in out.stdout
    assert "2d: folds 0, 1; skipped fold 2" in out.stderr
    doc = json.loads(cli(project, "evaluate", "-d", "901", "--format", "json").stdout)
    assert [m["model"] for m in doc["models"]] == ["2d", "3d_fullres"]
    assert sorted(doc["models"][0]["folds"]) == ["0", "1"]
    assert [f["code"] for f in doc["findings"]] == ["DG806"]
    asked = cli(project, "evaluate", "-d", "901", "--model", "2d", "--include-unfinished")
    assert asked.returncode == 1 and "DG802" in asked.stdout           # used because asked: no validation


@pytest.mark.nnunet
def test_ensemble_suggest_uses_finished_folds_and_advises_the_runs_device(project, tmp_path):
    w = tmp_path / "w.json"
    out = cli(project, "ensemble", "suggest", "-d", "901", "--model", "2d", "--model", "3d_fullres", "-o", str(w))
    assert out.returncode == 0, out.stdout + out.stderr          # was: fold 2 "missing", exit 1
    assert "DG806" in out.stdout and json.loads(w.read_text())["checkpoint"] == "final"
    # a finished fold without probabilities: the call to make them is on the device it trained on
    root = tmp_path / "project"
    shutil.copytree(project["root"], root, symlinks=True)
    for p in (root / R3D / "fold_1" / "validation").glob("*.npz"):
        p.unlink()
    env = {**train_env(root), "COLUMNS": "80"}
    out = dataguard_cli(["ensemble", "suggest", "-d", "901", "--model", "2d", "--model", "3d_fullres"], env, root)
    assert out.returncode == 1 and "3d_fullres fold 1" in out.stdout, out.stdout + out.stderr
    calls = [ln for ln in out.stdout.splitlines() if "nnUNetv2_train" in ln or "dataguard.train.runner" in ln]
    assert len(calls) == 1 and "-device cpu" in calls[0] and "--val" in calls[0] and "--npz" in calls[0]
    assert "-device cuda" not in out.stdout


# --- item 3: one checkpoint ---------------------------------------------------------------------
@pytest.mark.nnunet
def test_weights_tuned_on_another_checkpoint_are_refused(project, tmp_path):
    w = tmp_path / "w.json"
    w.write_text(json.dumps({"default": {"2d": 1, "3d_fullres": 1}, "checkpoint": "best"}))
    out = submit(project, tmp_path / "s.zip", "--model", "2d", "--model", "3d_fullres", "--weights", str(w),
                 "--device", "cpu")
    err = " ".join(out.stderr.split())
    assert out.returncode == 2 and "tuned on out-of-fold probabilities of checkpoint_best" in err, out.stderr
    assert "predicts with checkpoint_final" in err
    assert not (tmp_path / "s.zip.work").exists()                 # refused before anything predicted
    help_text = cli(project, "submit", "--help").stdout
    assert "default, as nnUNetv2_predict" in " ".join(help_text.split())
    # out-of-fold probabilities of checkpoint_best do not exist yet: said, with nnU-Net's --val_best
    best = cli(project, "ensemble", "suggest", "-d", "901", "--model", "2d", "--model", "3d_fullres",
               "--checkpoint", "best")
    assert best.returncode == 1, best.stdout + best.stderr
    flat = " ".join(best.stdout.split())
    assert "no out-of-fold probabilities of checkpoint_best" in flat and "made with checkpoint_final" in flat
    assert "--val_best" in best.stdout


# --- item 10: typos --------------------------------------------------------------------------------
@pytest.mark.nnunet
def test_a_mistyped_model_gets_did_you_mean(project, tmp_path):
    for args in (["submit", "-d", "901", "--images", str(project["images"]), "-o", str(tmp_path / "x.zip"),
                  "--model", "3d_fulres", "--device", "cpu"],
                 ["evaluate", "-d", "901", "--model", "3d_fulres"]):
        out = cli(project, *args)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "(did you mean 3d_fullres? have: 2d, 3d_fullres)" in " ".join(out.stderr.split())


# --- item 12: existing predictions, test images checked too --------------------------------------
@pytest.mark.nnunet
def test_submit_pred_dir_checks_the_test_images(project, tmp_path):
    root = project["root"]
    images, pred = tmp_path / "imagesTs", tmp_path / "pred"
    images.mkdir(), pred.mkdir()
    for c in ("heart_000", "heart_005"):            # the training images themselves: leakage (DG310)
        shutil.copy(root / f"nnUNet_raw/{DS}/imagesTr/{c}_0000.nii.gz", images)
        shutil.copy(root / f"nnUNet_raw/{DS}/labelsTr/{c}.nii.gz", pred)
    out = cli(project, "submit", str(pred), "--images", str(images), "-d", "901", "-o", str(tmp_path / "s.zip"))
    assert out.returncode == 1, out.stdout + out.stderr           # was: exit 0, archive written
    assert "DG310" in out.stdout and "the test images have errors" in out.stdout
    assert not (tmp_path / "s.zip").exists()
    # held-out images: the checks pass and the archive is written
    ok = cli(project, "submit", str(pred), "--images", str(project["images"]), "-d", "901", "-o",
             str(tmp_path / "ok.zip"))
    assert ok.returncode == 0, ok.stdout + ok.stderr


# --- item 13: no GPU, no --device cpu: a clear answer before predicting --------------------------
@pytest.mark.nnunet
def test_submit_without_a_gpu_answers_before_predicting(project, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out = submit(project, tmp_path / "s.zip", "--model", "2d:1")
    assert out.returncode == 2, out.stdout + out.stderr
    err = " ".join(out.stderr.split())
    assert "cannot predict with 2d:1: --device cuda, but torch sees no CUDA GPU" in err and "--device cpu" in err
    assert "Found no NVIDIA driver" not in out.stdout + out.stderr
    assert not list((tmp_path / "s.zip.work").glob("*/*.npz"))
