"""Per-epoch judgement of a running training: best EMA, early stopping, collapse, per-label bests.

Pure Python over the pseudo Dice history, recomputed from the whole history each epoch, so a
continued run (`--continue`) is judged exactly like an uninterrupted one. The trainer calls
it; the same functions (`training_logs.collapses`, `ema_of`) judge finished logs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .logs import Run, collapses, ema_of


def label_ema(series: list[float]) -> list[float]:
    """nnU-Net's EMA (0.9 old + 0.1 new) of one label; a `nan` epoch (label absent from the
    validation batches) leaves it unchanged instead of poisoning it."""
    out, ema = [], math.nan
    for v in series:
        if not math.isnan(v):
            ema = v if math.isnan(ema) else 0.9 * ema + 0.1 * v
        out.append(ema)
    return out


def best_index(values: list[float], min_delta: float = 0.0) -> int | None:
    """Index of the best value, where a later value counts only if it beats the best by > min_delta."""
    best = None
    for i, v in enumerate(values):
        if math.isnan(v):
            continue
        if best is None or v > values[best] + min_delta:
            best = i
    return best


@dataclass
class EpochVerdict:
    epoch: int
    dice: list[float]
    ema: float
    best_epoch: int | None
    best_ema: float | None
    new_label_bests: list[int] = field(default_factory=list)      # label indices peaking now
    new_collapses: list[tuple[int, int, float, int]] = field(default_factory=list)
    stop: str | None = None


class RunMonitor:
    def __init__(self, labels: list[str], *, patience: int | None = None, min_delta: float = 0.0,
                 stop_on_collapse: bool = False):
        self.labels = labels
        self.patience, self.min_delta, self.stop_on_collapse = patience, min_delta, stop_on_collapse
        self._seen_collapses: set[int] = set()

    def prime(self, dice: list[list[float]]) -> None:
        """Collapses already in a resumed history are not announced again."""
        self._seen_collapses = {c[0] for c in collapses(self._run(dice))}

    def _run(self, dice: list[list[float]]) -> Run:
        return Run(log="", dataset=None, labels=self.labels, epochs=list(range(len(dice))),
                   dice=[list(map(float, row)) for row in dice], ema=ema_of(dice))

    def judge(self, dice: list[list[float]]) -> EpochVerdict:
        """Verdict on the last epoch of `dice` (per epoch, per label; nan kept)."""
        run = self._run(dice)
        last = len(dice) - 1
        b = best_index(run.ema, self.min_delta)
        v = EpochVerdict(epoch=last, dice=run.dice[-1], ema=run.ema[-1], best_epoch=b,
                         best_ema=None if b is None else run.ema[b])
        for j in range(len(self.labels)):
            series = label_ema([row[j] if j < len(row) else math.nan for row in run.dice])
            if not math.isnan(series[-1]) and best_index(series) == last:
                v.new_label_bests.append(j)
        for c in collapses(run):
            if c[0] not in self._seen_collapses:
                self._seen_collapses.add(c[0])
                v.new_collapses.append(c)
        if v.new_collapses and self.stop_on_collapse:
            names = ", ".join(self.labels[c[0]] for c in v.new_collapses)
            v.stop = f"label collapse ({names})"
        elif self.patience is not None and b is not None and last - b >= self.patience:
            v.stop = (f"early stop: no EMA gain > {self.min_delta:g} for {last - b} epochs "
                      f"(best {v.best_ema:.4f} at epoch {b})")
        return v
