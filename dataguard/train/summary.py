"""After training: the run as data (a `training_logs.Run`), its per-label curve, a verified
copy of the best checkpoint, and how to predict with it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .checkpoints import verified_copy
from .logs import Run, ema_of, judge, plot_runs

PLOT = "dataguard_pseudo_dice.png"


def run_from_events(events: list[dict], fold_folder: Path, dataset: str | None) -> Run | None:
    """The whole history (resumed epochs included) as a Run, judged like `dataguard logs` does."""
    start = next((e for e in reversed(events) if e.get("event") == "start"), None)
    if start is None:
        return None
    hist = start.get("history") or {}
    dice = [list(r) for r in hist.get("dice", [])]
    secs = list(hist.get("epoch_seconds", []))[: len(dice)]
    secs += [None] * (len(dice) - len(secs))
    for ev in events:
        if ev.get("event") == "epoch":
            e = ev["epoch"]
            row = [float("nan") if v is None else float(v) for v in ev.get("dice") or []]
            del dice[e:], secs[e:]
            dice.append(row)
            secs.append(ev.get("epoch_seconds"))
    run = Run(log=str(fold_folder), dataset=dataset, labels=list(start.get("labels") or []),
              epochs=list(range(len(dice))), dice=dice, ema=ema_of(dice), epoch_seconds=secs)
    run.finished = any(e.get("event") == "trained" for e in events)
    while len(run.labels) < max((len(r) for r in dice), default=0):
        run.labels.append(f"label {len(run.labels) + 1}")
    return run


@dataclass
class Artifacts:
    plot: Path | None = None
    best_copy: Path | None = None
    best_blake3: str | None = None
    per_label: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def finish(run: Run | None, fold_folder: Path, patience: int) -> Artifacts:

    art = Artifacts()
    if run is not None:
        run.findings = judge(run, patience=patience)
        if run.epochs:
            art.plot = plot_runs([run], fold_folder / PLOT)
    best = fold_folder / "checkpoint_best.pth"
    if best.is_file():
        try:
            art.best_copy, art.best_blake3 = verified_copy(best)
        except OSError as e:
            art.problems.append(f"could not copy {best.name}: {e}")
    art.per_label = sorted(fold_folder.glob("checkpoint_best_*.pth"))
    return art
