"""A run that ends before the deadline (`dataguard train --until/--hours`, DG909).

nnU-Net's learning rate falls polynomially to zero at the last epoch, so the epoch count
cannot just be cut when time runs out: it is fixed once, early. The trainer times its first
`measure_epochs` epochs (wall time, checkpoints and plots included, the first one left out
when there are more: it carries the warm-up), estimates the final validation from its own
validation batches, and fixes the number of epochs that end before the deadline (never more
than the run's `--epochs`). After every epoch it checks again: should the epochs get slower
(a shared machine, thermal throttling), the run stops early rather than late. Pure Python:
the trainer feeds it times.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

VALIDATION_MARGIN = 1.5       # export (resampling, writing), the workers' start-up: on top of the forward passes
VALIDATION_FLOOR = 8.0        # seconds: starting the export workers alone (2 cases on a 2-core CPU: 8 s)
SAFETY = 0.99                 # of the time left: slack for the last checkpoint and the process ending


@dataclass
class Plan:
    epochs: int
    epoch_seconds: float
    validation_seconds: float
    reason: str
    cut: bool                 # fewer epochs than asked for (DG909)


def validation_seconds(shapes: list[tuple], patch: tuple, per_patch: float, mirror_axes: int) -> float:
    """The final validation's time: sliding windows with half-patch steps over each case
    (a 2D configuration slides over every slice), a forward pass per patch, 2^axes with
    test-time mirroring, times a margin for export; at least VALIDATION_FLOOR."""
    patches = 0
    for shape in shapes:
        lead = shape[: len(shape) - len(patch)]
        n = math.prod(lead) if lead else 1
        for s, p in zip(shape[len(shape) - len(patch):], patch):
            n *= 1 if s <= p else math.ceil((s - p) / (p * 0.5)) + 1
        patches += n
    if not shapes:
        patches = 1
    return max(VALIDATION_FLOOR, patches * per_patch * (2 ** mirror_axes) * VALIDATION_MARGIN)


class DeadlinePlanner:
    def __init__(self, deadline: float, measure_epochs: int = 2):
        self.deadline = float(deadline)
        self.measure = max(1, int(measure_epochs))
        self.walls: list[float] = []
        self._started: float | None = None
        self._forward: list[float] = []
        self.fixed: Plan | None = None
        self.validation = VALIDATION_FLOOR

    def epoch_started(self, now: float) -> None:
        self._started = now

    def epoch_ended(self, now: float) -> None:
        if self._started is not None:
            self.walls.append(now - self._started)
            self._started = None

    def forward_timed(self, seconds: float) -> None:
        self._forward.append(seconds)

    @property
    def forward_seconds(self) -> float:
        """One validation batch's forward pass (the median of those timed)."""
        if not self._forward:
            return 0.0
        s = sorted(self._forward)
        return s[len(s) // 2]

    @property
    def ready(self) -> bool:
        return len(self.walls) >= self.measure

    @property
    def epoch_seconds(self) -> float:
        """The epoch's wall time: the mean of the timed epochs, the first left out when there
        are more (warm-up), the latest epochs weighing as much as the early ones."""
        w = self.walls[1:] if len(self.walls) > 1 else self.walls
        return sum(w) / len(w) if w else 0.0

    def fix(self, now: float, done: int, upper: int, validation: float) -> Plan:
        """The epoch count, fixed: `done` epochs are behind, at most `upper` in all."""
        self.validation = validation
        per = self.epoch_seconds
        left = (self.deadline - now) * SAFETY - validation
        more = max(0, int(left // per)) if per > 0 else upper - done
        epochs = max(done, min(upper, done + more))
        cut = epochs < upper
        when = _clock(self.deadline)
        if cut:
            reason = (f"DG909 deadline {when}: {epochs} epochs fit ({_secs(per)} each, measured over "
                      f"{len(self.walls)}; final validation about {_secs(validation)}), not {upper}; "
                      f"the learning rate now falls to 0 at epoch {epochs}")
        else:
            reason = (f"deadline {when}: all {upper} epochs fit ({_secs(per)} each, final validation about "
                      f"{_secs(validation)})")
        self.fixed = Plan(epochs, per, validation, reason, cut)
        return self.fixed

    def must_stop(self, now: float, done: int, total: int) -> str | None:
        """Stop after this epoch when the next one and the final validation no longer fit."""
        if done >= total:
            return None
        per = max(self.epoch_seconds, self.walls[-1] if self.walls else 0.0)
        if now + per + self.validation > self.deadline:
            return (f"DG909 deadline {_clock(self.deadline)}: another epoch ({_secs(per)}) and the final "
                    f"validation (about {_secs(self.validation)}) would end after it")
        return None


def gate(verdicts: list[dict], configuration: str, device: str, deadline: float, now: float, *,
         epochs: int | None, iterations: int | None, val_iterations: int | None, trainer: str = "nnUNetTrainer"):
    """The gate's word on a deadline before training starts, from the last `doctor --throughput`
    verdict of this configuration on this device: ("refuse", text) when not even the timed
    epochs and the final validation fit, ("warn", text) when the epochs asked for do not all fit
    (the run will fix fewer), ("ok", text) when they do; ("note", text) without a verdict."""
    left = deadline - now
    v = next((v for v in verdicts if (v["configuration"], v["trainer"], v["device"]) ==
              (configuration, trainer, device)), None)
    if v is None:
        return "note", (f"no throughput verdict for {configuration} on {device}: the first 2 epochs will tell "
                        f"(dataguard doctor --throughput predicts it now)")
    n_it = iterations or v["iterations_per_epoch"]
    n_val = v["val_iterations"] if val_iterations is None else val_iterations
    per = n_it / v["full_per_s"] + n_val * v["val_step_s"]
    total = epochs or 1000
    when = _clock(v["when"])
    if 2 * per + VALIDATION_FLOOR > left:
        return "refuse", (f"deadline {_clock(deadline)}: not even the 2 epochs timed to plan the run fit "
                          f"(about {_secs(per)} each by the throughput verdict of {when}, {_secs(left)} left)")
    if total * per + VALIDATION_FLOOR > left:
        fit = max(2, int((left * SAFETY - VALIDATION_FLOOR) // per))
        return "warn", (f"deadline {_clock(deadline)}: {total} epochs of about {_secs(per)} (throughput "
                        f"verdict of {when}) need {_secs(total * per)}; about {fit} fit, and the run will fix "
                        f"that many after timing its first 2 epochs")
    return "ok", (f"deadline {_clock(deadline)}: {total} epochs of about {_secs(per)} (throughput verdict of "
                  f"{when}) end before it")


def _secs(s: float) -> str:
    if s >= 2 * 86400:
        return f"{s / 86400:.1f} days"
    if s >= 2 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s:.1f} s" if s < 10 else f"{s:,.0f} s"


def _clock(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
