"""The per-epoch judgement the trainer applies: EMA, early stopping, collapse, per-label bests."""
import math

from dataguard.train.monitor import RunMonitor, best_index, label_ema
from dataguard.train.settings import TrainSettings, base_of, trainer_name

NAN = math.nan
LABELS = ["myocardium", "left_ventricle", "right_ventricle"]


def test_label_ema_skips_nan_instead_of_poisoning():
    ema = label_ema([NAN, 0.5, NAN, 1.0])
    assert math.isnan(ema[0])
    assert ema[1] == 0.5 and ema[2] == 0.5
    assert abs(ema[3] - 0.55) < 1e-12


def test_best_index_min_delta():
    assert best_index([0.1, 0.5, 0.505, 0.52]) == 3
    assert best_index([0.1, 0.5, 0.505, 0.52], min_delta=0.01) == 3
    assert best_index([0.1, 0.5, 0.505, 0.509], min_delta=0.01) == 1
    assert best_index([NAN, NAN]) is None


def test_patience_stops_after_p_flat_epochs():
    m = RunMonitor(LABELS, patience=3)
    rows = [[0.1 * i] * 3 for i in range(1, 5)] + [[0.0] * 3] * 10
    stops = [m.judge(rows[: i + 1]).stop for i in range(len(rows))]
    first = next(i for i, s in enumerate(stops) if s)
    assert first == 3 + 3, stops
    assert "best" in stops[first] and "epoch 3" in stops[first]


def test_collapse_announced_once_and_stops_only_when_asked():
    rows = [[0.8, 0.9, 0.3 + 0.1 * i] for i in range(4)] + [[0.8, 0.9, 0.0]] * 12
    for stop in (False, True):
        m = RunMonitor(LABELS, stop_on_collapse=stop)
        verdicts = [m.judge(rows[: i + 1]) for i in range(len(rows))]
        announced = [v for v in verdicts if v.new_collapses]
        assert len(announced) == 1
        j, best_e, best, at = announced[0].new_collapses[0]
        assert LABELS[j] == "right_ventricle" and best_e == 3 and abs(best - 0.6) < 1e-9
        assert bool(announced[0].stop) is stop


def test_nan_epochs_are_not_zeros():
    rows = [[0.8, 0.9, 0.6]] + [[0.8, 0.9, NAN]] * 20
    m = RunMonitor(LABELS, stop_on_collapse=True)
    assert not any(m.judge(rows[: i + 1]).new_collapses for i in range(len(rows)))


def test_prime_keeps_a_resumed_collapse_quiet():
    rows = [[0.8, 0.9, 0.6]] + [[0.8, 0.9, 0.0]] * 12
    m = RunMonitor(LABELS, stop_on_collapse=True)
    m.prime(rows)
    assert not m.judge(rows + [[0.8, 0.9, 0.0]]).new_collapses


def test_per_label_best_uses_the_label_ema():
    rows = [[0.1, 0.1, 0.9], [0.2, 0.2, 0.1], [0.3, 0.3, 0.1]]
    m = RunMonitor(LABELS)
    assert m.judge(rows[:1]).new_label_bests == [0, 1, 2]
    assert m.judge(rows[:2]).new_label_bests == [0, 1]        # RV's EMA fell
    assert 2 not in m.judge(rows).new_label_bests


def test_settings_round_trip_and_names():
    s = TrainSettings(epochs=80, patience=20, save_best_per_label=True)
    assert TrainSettings.from_json(s.to_json()) == s
    assert TrainSettings().to_json() == "{}"                 # the printed call shows only what was asked
    assert trainer_name("nnUNetTrainerNoMirroring") == "nnUNetTrainerNoMirroring_dataguard"
    assert base_of("nnUNetTrainer_dataguard") == "nnUNetTrainer" and base_of("nnUNetTrainer") is None


def test_live_view_plain_lines_name_labels_and_alerts():
    import io

    from dataguard.cli.live_view import LiveView

    buf = io.StringIO()
    view = LiveView("Dataset901 2d fold 1", live=False, file=buf)
    view({"event": "start", "labels": LABELS, "num_epochs": 80, "start_epoch": 0, "iterations": 250,
          "val_iterations": 50, "history": {}})
    view({"event": "epoch", "epoch": 11, "num_epochs": 80, "dice": [0.8, 0.9, None], "ema": 0.77,
          "best_epoch": 11, "best_ema": 0.77, "epoch_seconds": 6.0, "collapses": [
              {"label": "right_ventricle", "best_epoch": 1, "best": 0.6, "at": 11}], "stop": "label collapse"})
    view({"event": "validation", "npz": True, "mirroring": False})
    text = buf.getvalue()
    assert "epoch 11/79" in text and "right_ventricle   nan" in text and "ETA 0:06:48" in text
    assert "DG801 right_ventricle collapsed" in text and "stopping: label collapse" in text
    assert "without test-time mirroring" in text
    assert all(len(line) <= 120 for line in text.splitlines())
