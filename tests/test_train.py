"""`dataguard train` on the real nnunetv2 (CPU): the gate's refusals on real datasets, the
end-to-end training run, plain nnUNetv2_predict on its model, --continue, early stopping,
collapse stop and per-label bests through the trainer's own hooks, and nnunetv2 2.6.2."""
from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_TRAIN, dataguard_cli, train_env

pytestmark = pytest.mark.nnunet
HERE = Path(__file__).parent
LABEL_NAMES = ["myocardium", "left_ventricle", "right_ventricle"]


def dry(root: Path, *args: str):
    return dataguard_cli(["train", "901", "2d", *args, "--dry-run"], train_env(root), root)


def ckpt(path: Path) -> dict:
    from dataguard.train.checkpoints import safe_load

    return safe_load(path, map_location="cpu")


# --- the gate -----------------------------------------------------------------------------
def test_gate_refuses_a_fold_that_the_default_split_leaves_without_a_label(real_project):
    # no splits_final.json: nnU-Net's KFold(seed 12345) puts both cases without RV into fold 0's validation
    assert not (real_project / "nnUNet_preprocessed/Dataset901_DemoCardiac/splits_final.json").exists()
    bad = dry(real_project, "0", "--device", "cpu")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "DG505" in bad.stdout and "DG504" in bad.stdout and "right_ventricle" in bad.stdout
    assert "predicted default split" in bad.stdout
    assert "dataguard splits rebalance -d Dataset901_DemoCardiac" in bad.stdout
    assert "REFUSED" in bad.stdout
    good = dry(real_project, "1", "--device", "cpu")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "PASS" in good.stdout and "DG504" not in good.stdout
    # a written split with the same fault is refused as well (not only the predicted one)
    from dataguard.splits.folds import nnunet_default_split

    cases = sorted(p.stem for p in (real_project / "nnUNet_preprocessed/Dataset901_DemoCardiac/nnUNetPlans_2d")
                   .glob("*.pkl"))
    (real_project / "nnUNet_preprocessed/Dataset901_DemoCardiac/splits_final.json").write_text(
        json.dumps(nnunet_default_split(cases)))
    written = dry(real_project, "0", "--device", "cpu")
    assert written.returncode == 1 and "DG504" in written.stdout and "DG505" not in written.stdout
    assert dry(real_project, "0", "--device", "cpu", "--allow", "DG504").returncode == 0


def test_gate_refuses_error_findings_and_allow_lets_one_code_through(real_project):
    b2nd = sorted((real_project / "nnUNet_preprocessed/Dataset901_DemoCardiac/nnUNetPlans_2d").glob("*_seg.b2nd"))[0]
    b2nd.write_bytes(b2nd.read_bytes()[:200])                   # a truncated copy
    out = dry(real_project, "1", "--device", "cpu")
    assert out.returncode == 1, out.stdout + out.stderr
    codes = sorted({w for w in out.stdout.split() if w.startswith("DG2")})
    assert codes, out.stdout
    assert f"dataguard repair -d Dataset901_DemoCardiac --select {codes[0]}" in out.stdout
    allowed = dry(real_project, "1", "--device", "cpu", "--allow", ",".join(codes))
    assert allowed.returncode == 0, allowed.stdout
    assert "allowed" in allowed.stdout


def test_gate_refuses_a_missing_device(real_project):
    import torch

    if not torch.cuda.is_available():
        out = dry(real_project, "1", "--device", "cuda")
        assert out.returncode == 1 and "no CUDA GPU" in out.stdout and "--device cpu" in out.stdout
    if not torch.backends.mps.is_available():
        out = dry(real_project, "1", "--device", "mps")
        assert out.returncode == 1 and "MPS" in out.stdout


def test_gate_refuses_too_little_disk(real_project):
    out = dry(real_project, "1", "--device", "cpu", "--reserve-disk", "900T")
    assert out.returncode == 1 and "free" in out.stdout and "--reserve-disk" in out.stdout


def test_gate_refuses_an_earlier_run_and_an_unsafe_checkpoint(real_project):
    import torch

    fold = real_project / "nnUNet_results/Dataset901_DemoCardiac/nnUNetTrainer_dataguard__nnUNetPlans__2d/fold_1"
    fold.mkdir(parents=True)
    torch.save({"current_epoch": 3}, fold / "checkpoint_latest.pth")
    out = dry(real_project, "1", "--device", "cpu")
    assert out.returncode == 1 and "unfinished run" in out.stdout and "--continue" in out.stdout
    assert dry(real_project, "1", "--device", "cpu", "--continue").returncode == 0
    torch.save({"current_epoch": 3}, fold / "checkpoint_final.pth")
    out = dry(real_project, "1", "--device", "cpu")
    assert out.returncode == 1 and "finished run" in out.stdout
    # a checkpoint that would run code when unpickled with weights_only=False is refused, not loaded
    torch.save({"current_epoch": 3, "trap": argparse.Namespace(x=1)}, fold / "checkpoint_final.pth")
    out = dry(real_project, "1", "--device", "cpu", "--continue")
    assert out.returncode == 1 and "refused to load" in out.stdout


def test_dry_run_prints_the_exact_call(real_project):
    out = dry(real_project, "1", "--device", "cpu", "--epochs", "80", "--patience", "20", "--npz")
    assert out.returncode == 0, out.stdout + out.stderr
    call = out.stdout.split("training call:")[1].strip()
    assert "nnUNet_extTrainer=" in call and "-tr nnUNetTrainer_dataguard" in call and "--npz" in call
    assert '"epochs": 80' in call and '"patience": 20' in call
    assert not (real_project / "nnUNet_results/Dataset901_DemoCardiac").exists()    # nothing trained


# --- the trained models (one session fixture, shared with later commands) -------------------
def test_training_end_to_end(trained_models):
    from dataguard.checks.files import blake3_file
    from dataguard.train.logs import find_logs, parse_log

    splits = json.loads((trained_models["root"] / "nnUNet_preprocessed/Dataset901_DemoCardiac/splits_final.json")
                        .read_text())
    for fold in trained_models["folds"]:
        d = trained_models["trainer_dir"] / f"fold_{fold}"
        final = ckpt(d / "checkpoint_final.pth")
        assert final["current_epoch"] == 3                          # exactly --epochs, not 1000
        assert final["trainer_name"] == "nnUNetTrainer"             # loadable without dataguard
        log = parse_log(find_logs(d)[0].read_text())
        assert log.epochs == [0, 1, 2] and log.finished
        for name in LABEL_NAMES:
            assert ckpt(d / f"checkpoint_best_{name}.pth")["current_epoch"] <= 3
        assert blake3_file(d / "checkpoint_best.pth.copy") == blake3_file(d / "checkpoint_best.pth")
        png = d / "dataguard_pseudo_dice.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        val = sorted(p.name[:-4] for p in (d / "validation").glob("*.npz"))
        assert val == sorted(splits[fold]["val"])                    # --npz: probabilities per val case
        assert json.loads((d / "dataguard_train.json").read_text())["epochs"] == 3
        proc = trained_models["runs"][("2d", fold)]
        assert "epoch 2/2" in proc.stderr and "epoch 3/" not in proc.stderr
        assert "-tr nnUNetTrainer_dataguard" in proc.stdout and "right_ventricle" in proc.stdout
        assert "verified" in proc.stdout


def test_trainer_subclass_keeps_the_base_signature():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from dataguard.train.trainer import trainer_class

    cls = trainer_class("nnUNetTrainer")
    assert cls.__name__ == "nnUNetTrainer_dataguard" and issubclass(cls, nnUNetTrainer)
    assert inspect.signature(cls.__init__) == inspect.signature(nnUNetTrainer.__init__)
    other = trainer_class("nnUNetTrainerNoMirroring")
    assert other.__name__ == "nnUNetTrainerNoMirroring_dataguard" and other is not cls


def test_plain_nnunet_predict_uses_the_trained_model(trained_models, tmp_path):
    import nibabel as nib
    import numpy as np

    env = dict(trained_models["env"])
    env.pop("nnUNet_extTrainer", None)
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(trained_models["root"] / "nnUNet_raw/Dataset901_DemoCardiac/imagesTr/heart_000_0000.nii.gz", src)
    exe = Path(sys.executable).with_name("nnUNetv2_predict")
    proc = subprocess.run([str(exe), "-i", str(src), "-o", str(tmp_path / "out"), "-d", "901", "-c", "2d", "-f", "1",
                           "-tr", "nnUNetTrainer_dataguard", "-device", "cpu", "--disable_tta", "-npp", "1",
                           "-nps", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    seg = np.asarray(nib.load(tmp_path / "out" / "heart_000.nii.gz").dataobj)
    assert seg.shape == (48, 48, 12) and set(np.unique(seg)) <= {0, 1, 2, 3}


def test_continue_resumes_and_a_finished_run_is_refused(trained_models, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(trained_models["root"], root, symlinks=True)
    env = train_env(root)
    again = dataguard_cli(["train", "901", "2d", "1", *TINY_TRAIN], env, root)
    assert again.returncode == 1 and "finished run" in again.stdout
    args = [a if a != "3" else "4" for a in TINY_TRAIN]               # --epochs 4
    changed = dataguard_cli(["train", "901", "2d", "1", *args, "--continue"], env, root)
    assert changed.returncode == 1 and "--epochs 3 -> 4" in changed.stdout    # the record says 3
    more = dataguard_cli(["train", "901", "2d", "1", *args, "--continue", "--change-settings"], env, root)
    assert more.returncode == 0, more.stdout + more.stderr
    rec = json.loads((root / "nnUNet_results/Dataset901_DemoCardiac/nnUNetTrainer_dataguard__nnUNetPlans__2d"
                      "/fold_1/dataguard_train.json").read_text())
    assert rec["epochs"] == 4 and rec["resumes"][-1]["changed"] == {"epochs": [3, 4]}
    d = root / "nnUNet_results/Dataset901_DemoCardiac/nnUNetTrainer_dataguard__nnUNetPlans__2d/fold_1"
    assert ckpt(d / "checkpoint_final.pth")["current_epoch"] == 4
    assert "epoch 3/3" in more.stderr and "epoch 0/3" not in more.stderr       # only the new epoch ran
    assert "4 epochs" in more.stdout                                          # the summary has the whole history


def test_logs_reads_the_trained_runs(trained_models):
    out = dataguard_cli(["logs", str(trained_models["trainer_dir"]), "--format", "json"], trained_models["env"],
                        trained_models["root"])
    runs = json.loads(out.stdout)["runs"]
    assert len(runs) == len(trained_models["folds"]) and all(r["epochs"] == 3 for r in runs)
    assert list(runs[0]["labels"]) == LABEL_NAMES


# --- early stopping, collapse stop, per-label bests: real training, controlled metric -----
def controlled(root: Path, curve: list, **settings) -> tuple[dict, Path]:
    from dataguard.train.settings import ENV, TrainSettings

    env = train_env(root)
    events = root / "events.jsonl"
    env[ENV] = TrainSettings(iterations_per_epoch=1, val_iterations=1, events=str(events), **settings).to_json()
    (root / "curve.json").write_text(json.dumps(curve))
    proc = subprocess.run([sys.executable, str(HERE / "helpers" / "controlled_training.py"), str(root / "curve.json")],
                          env={**env, "PYTHONPATH": str(HERE.parent)}, cwd=root, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result, events


def test_early_stopping_ends_training_cleanly(real_project):
    curve = [[0.2 * (i + 1)] * 3 for i in range(4)] + [[0.05] * 3] * 30    # the EMA peaks at epoch 3, then falls
    result, events = controlled(real_project, curve, epochs=30, patience=3)
    out = Path(result["output_folder"])
    assert result["stop"].startswith("early stop")
    final = ckpt(out / "checkpoint_final.pth")
    assert final["current_epoch"] == result["current_epoch"] < 30
    from dataguard.train.logs import find_logs, parse_log

    log = parse_log(find_logs(out)[0].read_text())
    assert log.finished and len(log.epochs) == final["current_epoch"]
    best = ckpt(out / "checkpoint_best.pth")["current_epoch"] - 1
    assert len(log.epochs) - 1 - best == 3                                # exactly `patience` epochs past the best
    evs = [json.loads(line) for line in events.read_text().splitlines()]
    assert evs[-1]["event"] == "trained" and evs[-1]["stop"] == result["stop"]


def test_collapse_stop_and_per_label_best_checkpoints(real_project):
    rv = [0.3, 0.4, 0.5, 0.6] + [0.0] * 30
    curve = [[0.5 + 0.02 * e, 0.9, rv[e]] for e in range(34)]
    result, events = controlled(real_project, curve, epochs=34, stop_on_collapse=True, save_best_per_label=True)
    out = Path(result["output_folder"])
    assert "collapse" in result["stop"] and "right_ventricle" in result["stop"]
    stopped_at = result["current_epoch"]
    assert stopped_at == 4 + 10                                 # best at epoch 3, then 10 epochs at ~0
    assert ckpt(out / "checkpoint_final.pth")["current_epoch"] == stopped_at
    assert ckpt(out / "checkpoint_best_right_ventricle.pth")["current_epoch"] == 4    # RV's own peak survives
    assert ckpt(out / "checkpoint_best_myocardium.pth")["current_epoch"] == stopped_at
    evs = [json.loads(line) for line in events.read_text().splitlines()]
    alerts = [c for e in evs if e["event"] == "epoch" for c in e["collapses"]]
    assert alerts == [{"label": "right_ventricle", "best_epoch": 3, "best": 0.6, "at": 13}]
    from dataguard.train.logs import find_logs

    assert "DG801" in find_logs(out)[0].read_text()


# --- nnunetv2 2.6.2: no nnUNet_extTrainer, the in-process runner -------------------------
@pytest.fixture(scope="session")
def nnunet_262(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("nnunetv2-2.6.2")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                           "nnunetv2==2.6.2"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("could not install nnunetv2 2.6.2: " + proc.stderr[-1000:])
        pytest.skip("nnunetv2 2.6.2 not installable here (offline?)")
    return target


@pytest.mark.compat
def test_train_with_nnunetv2_2_6_2(real_project, nnunet_262):
    env = {**train_env(real_project), "PYTHONPATH": str(nnunet_262)}
    args = ["train", "901", "2d", "1", "--device", "cpu", "--epochs", "2", "--iterations-per-epoch", "2",
            "--val-iterations", "1", "--no-val-mirroring"]
    dry_run = dataguard_cli([*args, "--dry-run"], env, real_project)
    assert "-m dataguard.train.runner" in dry_run.stdout and "nnUNet_extTrainer" not in dry_run.stdout
    proc = dataguard_cli(args, env, real_project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = real_project / "nnUNet_results/Dataset901_DemoCardiac/nnUNetTrainer_dataguard__nnUNetPlans__2d/fold_1"
    assert ckpt(d / "checkpoint_final.pth")["current_epoch"] == 2
    console = (d / "dataguard_console.log").read_text()
    assert "dataguard.train.runner" in console
    check = subprocess.run([sys.executable, "-c", "import nnunetv2; print(nnunetv2.__file__)"], env=env,
                           capture_output=True, text=True)
    assert check.stdout.startswith(str(nnunet_262))
