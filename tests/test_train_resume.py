"""The long run (issue 29): a run record that resume reuses, several folds in one command, an
interrupted campaign that the printed line finishes, visible and fast final validation, and
a gate that judges only this configuration. Real nnU-Net training on the CPU, interrupted
by a real SIGINT."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import dataguard_cli, interruptible, train_env

pytestmark = pytest.mark.nnunet

TINY = ["--device", "cpu", "--epochs", "4", "--iterations-per-epoch", "2", "--val-iterations", "1", "--npz",
        "--no-val-mirroring"]
MODEL = "nnUNetTrainer_dataguard__nnUNetPlans__2d"


def _model(root: Path) -> Path:
    return root / "nnUNet_results" / "Dataset901_DemoCardiac" / MODEL


def _interrupt_when(args, env, cwd, after: str, marker: str, timeout: float = 400) -> tuple[int, str, str]:
    """Run `dataguard ARGS`, send SIGINT (Ctrl-C) once stderr shows `marker` after `after`."""
    out, err = cwd / "run.out", cwd / "run.err"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "dataguard", *args], env=env, cwd=cwd, stdout=o, stderr=e,
                                preexec_fn=interruptible)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout and proc.poll() is None:
            if marker in err.read_text(errors="replace").partition(after)[2]:
                break
            time.sleep(0.3)
        assert proc.poll() is None, "the run ended before it could be interrupted:\n" + err.read_text()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(120)
    return code, out.read_text(), err.read_text()


@pytest.fixture(scope="module")
def campaign(_real_project_master, tmp_path_factory):
    """Folds 1-2 of Dataset901 2d: fold 1 trained, fold 2 interrupted by Ctrl-C after epoch 0
    (two epochs of margin: tiny epochs finish fast, and the whole run must not beat the signal),
    then the resume line the interrupted command printed, run as printed."""
    root = tmp_path_factory.mktemp("campaign") / "project"
    shutil.copytree(_real_project_master, root, symlinks=True)
    env = train_env(root)
    env.pop("nnUNet_def_n_proc")                      # what dataguard train sets is under test
    code, out, err = _interrupt_when(["train", "901", "2d", "1-2", *TINY], env, root, "fold 2  ·", "epoch 0/3")
    record_2 = json.loads((_model(root) / "fold_2" / "dataguard_train.json").read_text())
    unfinished = not (_model(root) / "fold_2" / "checkpoint_final.pth").exists()
    evaluate = dataguard_cli(["evaluate", "-d", "901", "--model", "2d"], env, root)   # fold 2 as Ctrl-C left it
    resume = dataguard_cli(["train", "901", "2d", "1-2", "--continue"], env, root)
    return {"root": root, "env": env, "first": (code, out, err), "record_2": record_2, "resume": resume,
            "unfinished": unfinished, "evaluate": evaluate}


def test_interrupted_campaign_says_how_to_resume(campaign):
    code, out, err = campaign["first"]
    assert code == 130, out + err
    assert "Traceback" not in err
    assert "dataguard train 901 2d 1-2 --continue" in err
    assert "fold" in out and "interrupted" in out and "trained" in out     # the summary table
    assert campaign["unfinished"]


def test_a_fold_interrupted_by_ctrl_c_is_skipped_by_evaluate(campaign):
    """Issue 29 item 2 on a real SIGINT: the interrupted fold is named, skipped (DG806), and the
    command that finishes it is the resume line with the run's own device."""
    r = campaign["evaluate"]
    text = " ".join((r.stdout + r.stderr).split())
    assert "DG806" in text and "fold 2 skipped" in text, text
    assert "no checkpoint_final.pth" in text
    assert "-device cuda" not in text and "--device cuda" not in text


def test_run_record_holds_every_setting_before_the_run_ends(campaign):
    rec = campaign["record_2"]
    assert rec["record"] == 1 and rec["fold"] == "2" and rec["configuration"] == "2d"
    assert rec["device"] == "cpu" and rec["npz"] is True and rec["epochs"] == 4
    assert rec["iterations_per_epoch"] == 2 and rec["val_iterations"] == 1 and rec["val_mirroring"] is False
    assert rec["trainer"] == "nnUNetTrainer" and rec["plans"] == "nnUNetPlans"


def test_printed_resume_line_finishes_the_campaign_with_the_recorded_settings(campaign):
    r = campaign["resume"]
    assert r.returncode == 0, r.stdout + r.stderr
    assert "finished before" in r.stdout                       # fold 1 skipped
    assert "as recorded in fold_2/dataguard_train.json: --device cpu --epochs 4" in r.stdout
    fold_2 = _model(campaign["root"]) / "fold_2"
    assert (fold_2 / "checkpoint_final.pth").is_file()
    rec = json.loads((fold_2 / "dataguard_train.json").read_text())
    assert rec["epochs"] == 4 and rec["device"] == "cpu" and rec["npz"] is True     # never replaced
    assert len(rec["resumes"]) == 1 and "changed" not in rec["resumes"][0]
    log = max(fold_2.glob("training_log_*.txt"), key=lambda p: p.stat().st_mtime).read_text()
    assert "Epoch 3" in log and "Epoch 4" not in log          # 4 epochs, not nnU-Net's 1000
    assert (fold_2 / "validation" / "summary.json").is_file()
    assert len(list(fold_2.glob("validation/*.npz"))) == 2     # --npz kept on resume


def test_final_validation_is_visible_and_uses_one_export_worker_per_core(campaign):
    import os

    err = campaign["resume"].stderr
    assert "final validation: case 1/2" in err and "final validation: case 2/2" in err
    console = (_model(campaign["root"]) / "fold_2" / "dataguard_console.log").read_text()
    cores = min(8, len(os.sched_getaffinity(0)))
    assert f"nnUNet_def_n_proc={cores}" in console


def test_piped_training_lines_fit_80_columns(campaign):
    for text in (campaign["first"][1], campaign["first"][2], campaign["resume"].stdout, campaign["resume"].stderr):
        long = [line for line in text.splitlines() if len(line) > 80 and " " in line.strip()]
        assert not long, long


def test_changed_setting_on_resume_is_refused_unless_asked(campaign):
    root, env = campaign["root"], campaign["env"]
    model = _model(root)
    shutil.copytree(model / "fold_2", model / "fold_3")
    (model / "fold_3" / "checkpoint_final.pth").unlink()          # an unfinished run of fold 3
    rec = json.loads((model / "fold_3" / "dataguard_train.json").read_text())
    rec["fold"] = "3"
    (model / "fold_3" / "dataguard_train.json").write_text(json.dumps(rec))
    r = dataguard_cli(["train", "901", "2d", "3", "--continue", "--epochs", "9", "--dry-run"], env, root)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "would change the run's recorded settings: --epochs 4 -> 9" in " ".join(r.stdout.split())
    ok = dataguard_cli(["train", "901", "2d", "3", "--continue", "--epochs", "9", "--change-settings", "--dry-run"],
                       env, root)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert '"epochs": 9' in ok.stdout and "-device cpu" in ok.stdout
    same = dataguard_cli(["train", "901", "2d", "3", "--continue", "--dry-run"], env, root)
    assert same.returncode == 0 and '"epochs": 4' in same.stdout and "-device cpu" in same.stdout
    shutil.rmtree(model / "fold_3")


def test_a_fold_the_split_does_not_have_is_refused(campaign):
    r = dataguard_cli(["train", "901", "2d", "5", "--device", "cpu", "--dry-run"], campaign["env"], campaign["root"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "fold 5 is not in the split (5 folds, 0-4)" in " ".join(r.stdout.split())


def test_several_folds_gate_every_fold_before_training_any(campaign):
    """Fold 0 of this split validates no right ventricle (DG504): "0,4" refuses before fold 4
    could start, and nothing is trained."""
    root, env = campaign["root"], campaign["env"]
    before = sorted(p.name for p in _model(root).iterdir())
    r = dataguard_cli(["train", "901", "2d", "0,4", *TINY], env, root)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "DG504" in r.stdout and "no fold trained" in r.stderr
    assert sorted(p.name for p in _model(root).iterdir()) == before


def test_gate_judges_only_its_configuration(trained_models):
    """The 3d_fullres folder's files are not 'unexpected' in the 2d gate (DG104): the gate counts
    only what `dataguard scan` reports too."""
    r = dataguard_cli(["train", "901", "2d", "1", "--continue", "--dry-run"], trained_models["env"],
                      trained_models["root"])
    assert r.returncode == 0, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    assert "DG104" not in text
    assert "other finding" not in text or "(1 other finding does not block" in text


@pytest.mark.parametrize("spec, folds", [("0-4", [0, 1, 2, 3, 4]), ("0,2,1", [0, 2, 1]), ("0-2,4", [0, 1, 2, 4]),
                                         ("all", ["all"]), ("3", [3]), ("1,1", [1])])
def test_fold_specs(spec, folds):
    from dataguard.cli.train import parse_folds

    assert parse_folds(spec) == folds


@pytest.mark.parametrize("spec", ["", "a", "3-1", "-1", "0-", "all,1"])
def test_bad_fold_specs(spec):
    from dataguard.cli.train import parse_folds
    from dataguard.errors import UsageError

    with pytest.raises(UsageError):
        parse_folds(spec)
