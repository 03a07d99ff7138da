"""`dataguard logs` on logs written by nnU-Net's own `print_to_log_file`, both number formats."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dataguard.cli import main
from dataguard.train.logs import ema_of, load_runs, parse_log, parse_numbers

LABELS = {"background": 0, "myocardium": 1, "left_ventricle": 2, "right_ventricle": 3}


def write_log(path: Path, curves: list[list[float]], numpy1: bool = False, finished: bool = False,
              start_epoch: int = 0) -> Path:
    """A training log as nnU-Net writes it: its own print_to_log_file and its own rounding.

    numpy1: the list printed as numpy 1 printed it (`[0.89, nan]`) instead of numpy 2's
    `[np.float32(0.89), np.float32(nan)]`.
    """
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    me = SimpleNamespace(local_rank=0, log_file=str(path))
    log = lambda *a: nnUNetTrainer.print_to_log_file(me, *a, also_print_to_console=False)  # noqa: E731
    best = None
    ema = None
    for i, row in enumerate(curves):
        e = start_epoch + i
        log("")
        log(f"Epoch {e}")
        log(f"Current learning rate: {np.round(0.01 * (1 - e / 1000) ** 0.9, decimals=5)}")
        log("train_loss", np.round(np.float32(-0.5), decimals=4))
        log("val_loss", np.round(np.float32(-0.4), decimals=4))
        dice = [np.round(np.float32(v), decimals=4) for v in row]
        if numpy1:
            log("Pseudo dice", "[" + ", ".join("nan" if math.isnan(v) else repr(float(v)) for v in dice) + "]")
        else:
            log("Pseudo dice", dice)
        log(f"Epoch time: {np.round(12.3456, decimals=2)} s")
        mean = np.nanmean(np.array(row, dtype=np.float64)) if not all(math.isnan(v) for v in row) else np.nan
        ema = mean if ema is None else 0.9 * ema + 0.1 * mean
        if best is None or ema > best:
            best = ema
            log(f"Yayy! New best EMA pseudo Dice: {np.round(best, decimals=4)}")
    if finished:
        log("Training done.")
    return path


def results_tree(root: Path, folds: dict[int, list[list[float]]]) -> Path:
    trainer = root / "Dataset001_Heart" / "nnUNetTrainer__nnUNetPlans__2d"
    for f, curves in folds.items():
        (trainer / f"fold_{f}").mkdir(parents=True)
        write_log(trainer / f"fold_{f}" / "training_log_2026_11_27_10_00_00.txt", curves, finished=True)
    (trainer / "dataset.json").write_text(json.dumps({"labels": LABELS, "channel_names": {"0": "MRI"}}))
    return root / "Dataset001_Heart"


def healthy(n=30):
    return [[min(0.9, 0.05 * e), min(0.85, 0.04 * e), min(0.7, 0.03 * e)] for e in range(n)]


def test_numpy2_and_numpy1_formats_parse_alike_with_nan(tmp_path):
    curves = [[0.1, float("nan"), 0.3], [0.2, 0.25, float("nan")], [0.3, 0.35, 0.4]]
    a = parse_log(write_log(tmp_path / "a.txt", curves).read_text())
    b = parse_log(write_log(tmp_path / "b.txt", curves, numpy1=True).read_text())
    assert "np.float32(nan)" in (tmp_path / "a.txt").read_text()        # really numpy 2's format
    assert a.epochs == b.epochs == [0, 1, 2]
    for x, y in zip(a.dice, b.dice):
        assert np.allclose(x, y, equal_nan=True)
    assert math.isnan(a.dice[0][1]) and a.dice[0][0] == pytest.approx(0.1)


def test_ema_is_nnunets_own(tmp_path):
    from nnunetv2.training.logging.nnunet_logger import MetaLogger

    curves = healthy(12)
    curves[3][2] = float("nan")
    logger = MetaLogger(str(tmp_path), resume=False)          # nnU-Net 2.8's logger, its EMA
    for e, row in enumerate(curves):
        logger.log("mean_fg_dice", float(np.nanmean(np.round(np.float32(row), 4))), e)
    ours = ema_of(parse_log(write_log(tmp_path / "l.txt", curves).read_text()).dice)
    assert np.allclose(ours, logger.get_value("ema_fg_dice", step=None), atol=1e-4)


def test_parse_numbers():
    assert parse_numbers("[np.float32(0.5), np.float64(nan), 0.25, nan, 1e-3]")[0] == 0.5
    assert len(parse_numbers("[np.float32(0.5), np.float64(nan), 0.25, nan, 1e-3]")) == 5


def test_collapse_is_dg801_and_nan_is_not_zero(tmp_path):
    rise = [[0.3 + 0.02 * e, 0.3 + 0.02 * e, 0.05 * e] for e in range(14)]     # rv reaches 0.65 at 13
    fall = [[0.6, 0.58, 0.0] for _ in range(15)]
    root = results_tree(tmp_path, {0: rise + fall, 1: rise + [[0.6, 0.58, float("nan")] for _ in range(15)]})
    runs = {Path(r.log).parent.name: r for r in load_runs(root)}
    [f] = runs["fold_0"].findings
    assert f.code == "DG801" and "'right_ventricle'" in f.message and "epoch 13" in f.message
    assert f.dataset == "Dataset001_Heart"
    assert runs["fold_1"].findings == []                   # absent from batches, not collapsed


def test_collapse_needs_the_other_labels_to_hold(tmp_path):
    rise = [[0.05 * e, 0.05 * e, 0.05 * e] for e in range(14)]
    everything_down = [[0.0, 0.0, 0.0] for _ in range(15)]
    [run] = load_runs(write_log(tmp_path / "training_log_x.txt", rise + everything_down))
    assert [f.code for f in run.findings] == []


def test_dg804_patience(tmp_path):
    curves = healthy(20) + [[0.3, 0.3, 0.3] for _ in range(60)]          # the EMA peaks at epoch 19
    log = write_log(tmp_path / "training_log_p.txt", curves)
    [run] = load_runs(log, patience=50)
    assert [f.code for f in run.findings] == ["DG804"]
    assert "early stopping with patience 50" in run.findings[0].message and " h" in run.findings[0].message
    [run] = load_runs(log, patience=70)
    assert run.findings == []


@pytest.mark.parametrize("where", ["file", "fold", "trainer", "dataset"])
def test_paths_and_label_names(tmp_path, where):
    root = results_tree(tmp_path, {0: healthy(), 1: healthy(25)})
    trainer = root / "nnUNetTrainer__nnUNetPlans__2d"
    path = {"file": next((trainer / "fold_0").glob("training_log_*")), "fold": trainer / "fold_0",
            "trainer": trainer, "dataset": root}[where]
    runs = load_runs(path)
    assert len(runs) == (1 if where in ("file", "fold") else 2)
    d = runs[0].to_dict()
    assert list(d["labels"]) == ["myocardium", "left_ventricle", "right_ventricle"]
    assert d["epochs"] == 30 and d["finished"] and d["labels"]["myocardium"]["best"] == pytest.approx(0.9)
    assert d["labels"]["myocardium"]["best_epoch"] == 18


def test_cli_json_csv_plot_and_errors(tmp_path, capsys):
    root = results_tree(tmp_path, {0: healthy(), 1: healthy(25)})
    assert main(["logs", str(root), "--format", "json", "--plot", str(tmp_path / "c.png")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["runs"]) == 2
    run = doc["runs"][0]
    assert set(run) >= {"log", "epochs", "best_epoch", "best_ema", "labels", "findings"}
    assert set(run["labels"]["right_ventricle"]) == {"best", "best_epoch", "last"}
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["logs", str(root), "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + 2 * 3
    assert main(["logs", str(root)]) == 0
    assert "best EMA" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["logs", str(tmp_path / "empty")]) == 2


def test_follow_prints_new_epochs_and_alerts(tmp_path):
    (tmp_path / "fold_0").mkdir()
    log = write_log(tmp_path / "fold_0" / "training_log_f.txt", [[0.3, 0.3, 0.6]])
    proc = subprocess.Popen([sys.executable, "-m", "dataguard", "logs", str(log), "--follow", "--follow-for", "6",
                             "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def grow():                          # the training goes on: epochs 1..12, the RV collapses
        time.sleep(2.0)
        write_log(log, [[0.5, 0.5, 0.6]] + [[0.5, 0.5, 0.0]] * 11, start_epoch=1)

    t = threading.Thread(target=grow)
    t.start()
    out, err = proc.communicate(timeout=60)
    t.join()
    assert proc.returncode == 0, err
    assert "epoch 1:" in out and "epoch 12:" in out
    assert "ALERT DG801: label 'label 3' collapsed" in out     # no dataset.json beside it: numbered
