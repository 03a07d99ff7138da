"""Training time (issue 33): the throughput verdict against the epochs a real `train` then
measures, the verdict's logic on known measurements, and a run that ends by its deadline."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import dataguard_cli, train_env
from dataguard.doctor.throughput import judge
from dataguard.train.deadline import DeadlinePlanner, validation_seconds
from dataguard.train.logs import Run, judge as judge_run, load_runs

TRAINER_DIR = "nnUNet_results/Dataset901_DemoCardiac/nnUNetTrainer_dataguard__nnUNetPlans__2d"


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def test_predicted_epoch_is_within_30_percent_of_a_real_train(real_project):
    """The verdict's epoch (iterations / full-step rate + validation batches x their time) against
    nnU-Net's own epoch times of a real `dataguard train` of the same configuration and length.
    The probe writes nothing into the dataset (its split is made in memory)."""
    env = train_env(real_project)
    pre = real_project / "nnUNet_preprocessed" / "Dataset901_DemoCardiac"
    before = _tree(pre)
    doc = dataguard_cli(["doctor", "-d", "901", "-c", "2d", "--throughput", "--device", "cpu", "--steps", "8",
                         "--iterations-per-epoch", "8", "--val-iterations", "2", "--epochs", "5",
                         "--format", "json", "--manifest-dir", str(real_project / "m")], env, real_project)
    assert doc.returncode == 0, doc.stdout + doc.stderr
    tp = json.loads(doc.stdout)["throughput"]
    assert _tree(pre) == before
    assert tp["da_workers"] == 0 and tp["bound"] in ("compute", "data loading")
    assert tp["full_per_s"] > 0 and tp["compute_per_s"] > 0 and tp["data_per_s"] > 0
    assert tp["run_seconds"] == pytest.approx(5 * tp["epoch_seconds"])
    run = dataguard_cli(["train", "901", "2d", "1", "--device", "cpu", "--epochs", "5", "--iterations-per-epoch", "8",
                         "--val-iterations", "2", "--no-val-mirroring"], env, real_project)
    assert run.returncode == 0, run.stdout + run.stderr
    (r,) = load_runs(real_project / TRAINER_DIR / "fold_1")
    measured = r.epoch_time                                    # median, warm-up epoch 0 left out
    assert r.iterations == 8 and r.to_dict()["iteration_seconds"] == pytest.approx(measured / 8, rel=1e-3)
    assert abs(tp["epoch_seconds"] - measured) <= 0.30 * measured, (tp["epoch_seconds"], r.epoch_seconds)
    logs = dataguard_cli(["logs", str(real_project / TRAINER_DIR / "fold_1")], env, real_project)
    assert f"epoch time {measured:.1f} s (median of 5" in logs.stdout
    rep = dataguard_cli(["report", "-d", "901", "-o", str(real_project / "r.html"), "--cases", "0"], env, real_project)
    assert rep.returncode in (0, 1), rep.stdout + rep.stderr
    html = (real_project / "r.html").read_text()
    assert "<b>throughput</b> (2d on cpu, nnUNet_n_proc_DA=0" in html and f"{measured:.1f}" in html


def test_augmentation_in_the_training_process_is_named_as_the_bound_when_it_dominates():
    """nnUNet_n_proc_DA=0: the step is data + compute in series; a data share of a quarter or
    more bounds the epoch and names the worker setting (DG908); a small share is compute."""
    base = {"dataset": "Dataset1_X", "configuration": "2d", "device": "cpu", "da_workers": 0, "cores": 8,
            "iterations_per_epoch": 250, "val_iterations": 50, "epochs": 1000, "val": {"per_second": 10.0}}
    starved = judge({**base, "full": {"per_second": 1.0}, "compute": {"per_second": 4.0},
                     "data": {"per_second": 1.3}})
    assert starved.bound == "data loading" and [f.code for f in starved.findings] == ["DG908"]
    assert "nnUNet_n_proc_DA=7" in starved.findings[0].help and "augmentation runs in the training process" \
        in starved.findings[0].message
    fed = judge({**base, "full": {"per_second": 3.6}, "compute": {"per_second": 4.0}, "data": {"per_second": 50.0}})
    assert fed.bound == "compute" and not fed.findings
    assert fed.epoch_seconds == pytest.approx(250 / 3.6 + 50 / 10.0)
    assert fed.run_seconds == pytest.approx(1000 * fed.epoch_seconds)


def test_workers_that_cannot_keep_up_are_the_bound_with_the_cause_named():
    base = {"dataset": "Dataset1_X", "configuration": "3d_fullres", "device": "cuda", "da_workers": 4, "cores": 16,
            "val": {"per_second": 5.0}, "compute": {"per_second": 5.0}, "torch": "2.8.0", "patch_size": [1, 2, 3]}
    io = judge({**base, "full": {"per_second": 1.0, "iowait": 0.3, "gpu_util": 18.0},
                "data": {"per_second": 1.0, "workers_busy": 0.2}})
    assert io.bound == "data loading" and "nnUNet_keep_files_open=True" in io.findings[0].help
    assert any("GPU busy 18%" in e for e in io.evidence)
    cpu = judge({**base, "full": {"per_second": 1.0}, "data": {"per_second": 1.0, "workers_busy": 0.97}})
    assert "nnUNet_n_proc_DA=8" in cpu.findings[0].help            # 16 cores: twice the workers
    gpu = judge({**base, "torch": "2.9.1", "full": {"per_second": 4.8}, "data": {"per_second": 20.0}})
    assert gpu.bound == "compute" and not gpu.findings and any("#3002" in a for a in gpu.advice)


def test_deadline_planner_fixes_the_epochs_once_and_stops_when_the_next_would_be_late():
    p = DeadlinePlanner(deadline=1000.0, measure_epochs=2)
    for start, end in ((0, 30), (30, 50)):               # epoch 0 carries the warm-up: left out
        p.epoch_started(start)
        p.epoch_ended(end)
    assert p.ready and p.epoch_seconds == 20
    plan = p.fix(now=50, done=2, upper=1000, validation=100)
    assert plan.cut and plan.epochs == 2 + int(((1000 - 50) * 0.99 - 100) // 20)
    assert "DG909" in plan.reason and f"{plan.epochs} epochs fit" in plan.reason
    assert p.fix(now=50, done=2, upper=10, validation=100).epochs == 10          # --epochs is the cap
    p.epoch_started(50)
    p.epoch_ended(890)                                    # a very slow epoch: the next would end late
    assert "DG909" in p.must_stop(890, done=3, total=40)


def test_validation_estimate_slides_half_patches_over_every_slice():
    # 2d: 10 slices of 64x64 with a 32x32 patch: 3x3 windows a slice; mirrored along 2 axes: x4
    assert validation_seconds([(10, 64, 64)], (32, 32), 0.01, 2) == pytest.approx(
        max(8.0, 10 * 9 * 0.01 * 4 * 1.5))
    assert validation_seconds([(10, 640, 640)], (32, 32), 0.01, 0) == pytest.approx(10 * 39 * 39 * 0.01 * 1.5)


def test_logs_flag_a_run_whose_epochs_got_slower():
    run = Run(log="x/fold_0/training_log.txt", dataset=None, labels=["a"], epochs=list(range(12)),
              dice=[[0.5]] * 12, ema=[0.5] * 12, epoch_seconds=[90] + [60] * 6 + [130] * 5)
    (f,) = [f for f in judge_run(run) if f.code == "DG908"]
    assert "epochs got slower" in f.message and "130 s" in f.message and "60 s" in f.message
    steady = Run(log="x", dataset=None, labels=["a"], epochs=list(range(12)), dice=[[0.5]] * 12, ema=[0.5] * 12,
                 epoch_seconds=[90] + [60, 62, 61, 59, 63, 60, 61, 62, 60, 61, 64])
    assert not [f for f in judge_run(steady) if f.code == "DG908"]


def test_hours_is_honoured_within_ten_percent(real_project):
    """`train --hours` on a real CPU run of a few minutes: the epochs are fixed after two were
    timed (the plan is in the events and the log), and the command ends within 10% of its
    deadline; nnU-Net's learning rate follows the fixed total."""
    env = train_env(real_project)
    hours = 0.05                                          # 180 s
    t0 = time.time()
    run = dataguard_cli(["train", "901", "2d", "1", "--device", "cpu", "--hours", str(hours),
                         "--iterations-per-epoch", "6", "--val-iterations", "1", "--no-val-mirroring"],
                        env, real_project, timeout=900)
    took = time.time() - t0
    assert run.returncode == 0, run.stdout + run.stderr
    budget = hours * 3600
    assert abs(took - budget) <= 0.10 * budget, (took, run.stdout[-3000:], run.stderr[-3000:])
    fold = real_project / TRAINER_DIR / "fold_1"
    events = [json.loads(line) for line in (fold / "dataguard_events.jsonl").read_text().splitlines()]
    (plan,) = [e for e in events if e["event"] == "plan"]
    assert plan["cut"] and plan["epochs"] >= 3 and "epochs fit" in plan["reason"]
    (r,) = load_runs(fold)
    assert len(r.epochs) <= plan["epochs"]
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "dataguard: DG909 deadline" in log
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "validation" / "summary.json").is_file()
    assert "deadline" in run.stderr


def test_a_real_starved_loader_turns_the_verdict_and_workers_hide_the_wait(real_project):
    """nnU-Net's real trainer and data loader, the base trainer against one whose loader waits
    0.1 s a sample without using the CPU (tests/trainers/slow_loader.py, as a network share
    would): the base trainer is bound by compute; the slow one by data loading, in the training
    process (nnUNet_n_proc_DA=0: DG908 names a worker) and with two workers (idle workers:
    twice as many), and the workers make the full step faster."""
    from dataguard.train.launch import finds_external_trainers

    if not finds_external_trainers():
        pytest.skip("nnU-Net < 2.8 does not look for trainers in nnUNet_extTrainer")

    def verdict(trainer, workers):
        env = {**train_env(real_project), "nnUNet_n_proc_DA": str(workers),
               "nnUNet_extTrainer": str(Path(__file__).parent / "trainers")}
        out = dataguard_cli(["doctor", "-d", "901", "-c", "2d", "--throughput", "--device", "cpu", "--steps", "6",
                             "--trainer", trainer, "--format", "json", "--manifest-dir", str(real_project / "m")],
                            env, real_project)
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)["throughput"]

    base = verdict("nnUNetTrainer", 0)
    assert base["bound"] == "compute" and not base["findings"]
    starved = verdict("nnUNetTrainerSlowLoader", 0)
    assert starved["bound"] == "data loading" and [f["code"] for f in starved["findings"]] == ["DG908"]
    assert "nnUNet_n_proc_DA=" in starved["findings"][0]["help"]
    assert starved["full_per_s"] < 0.8 * base["full_per_s"]
    worker = verdict("nnUNetTrainerSlowLoader", 2)
    assert worker["bound"] == "data loading", worker
    assert "wait without using the CPU" in " ".join(worker["advice"]) and "nnUNet_n_proc_DA=4" in worker["advice"][0]
    assert worker["full_per_s"] > 1.3 * starved["full_per_s"]


def test_live_view_counts_wall_time_and_shows_the_deadline_once_the_epochs_are_fixed():
    """The ETA uses the time between epochs (checkpoints and plots included), not nnU-Net's
    shorter epoch time; before the plan the deadline line says the epochs are being timed."""
    import io

    from dataguard.cli.live_view import LiveView

    buf = io.StringIO()
    view = LiveView("Dataset901 2d fold 1", live=False, file=buf)
    now = time.time()
    view({"event": "start", "labels": ["a"], "num_epochs": 1000, "start_epoch": 0, "iterations": 6,
          "val_iterations": 1, "deadline": now + 3600, "history": {}})
    for e in range(2):
        view({"event": "epoch", "epoch": e, "time": now + 10 * e, "dice": [0.5], "ema": 0.5, "best_epoch": e,
              "best_ema": 0.5, "epoch_seconds": 4.0})
    assert "timing the first epochs" in buf.getvalue() and "LATE" not in buf.getvalue()
    view({"event": "plan", "epochs": 300, "reason": "DG909 deadline: 300 epochs fit", "cut": True})
    view({"event": "epoch", "epoch": 2, "time": now + 20, "dice": [0.5], "ema": 0.5, "best_epoch": 2,
          "best_ema": 0.5, "epoch_seconds": 4.0})
    text = buf.getvalue()
    assert "DG909 deadline: 300 epochs fit" in text and "epoch 2/299" in text
    assert "ETA 0:49:30" in text                        # 297 epochs x 10 s wall, not x 4 s
    assert "training ends about" in text and all(len(line) <= 80 for line in text.splitlines())


def test_the_gate_judges_a_deadline_by_the_last_throughput_verdict():
    """Before the first epoch: refused when not even the 2 timed epochs fit, a DG909 warning when
    the epochs asked for do not all fit (with how many do), a note when they do or when no
    verdict of this configuration, trainer and device exists."""
    from dataguard.train.deadline import gate

    v = [{"configuration": "2d", "trainer": "nnUNetTrainer", "device": "cuda", "full_per_s": 2.0,
          "val_step_s": 0.1, "iterations_per_epoch": 250, "val_iterations": 50, "when": 0.0}]
    per = 250 / 2.0 + 50 * 0.1                                          # 130 s an epoch
    kind, text = gate(v, "2d", "cuda", deadline=1000.0, now=900.0, epochs=None, iterations=None, val_iterations=None)
    assert kind == "refuse" and "not even the 2 epochs" in text
    kind, text = gate(v, "2d", "cuda", deadline=100 * per, now=0.0, epochs=1000, iterations=None, val_iterations=None)
    assert kind == "warn" and f"about {int((100 * per * 0.99 - 8) // per)} fit" in text
    kind, _ = gate(v, "2d", "cuda", deadline=100 * per, now=0.0, epochs=80, iterations=None, val_iterations=None)
    assert kind == "ok"
    kind, _ = gate(v, "2d", "cpu", deadline=100 * per, now=0.0, epochs=80, iterations=None, val_iterations=None)
    assert kind == "note"
    kind, _ = gate(v, "2d", "cuda", deadline=100 * per, now=0.0, epochs=80, iterations=None, val_iterations=None,
                   trainer="nnUNetTrainerDA5")
    assert kind == "note"
