"""The live view on stderr while nnU-Net trains, drawn from the trainer's events.

On a terminal: a rich progress bar over epochs with its ETA, the last pseudo Dice per label
by name, the best EMA and its epoch, the epoch time and any collapse alert. Piped (a log
file, CI, `nohup`): one plain line per epoch instead.

Epochs are named as nnU-Net names them, from 0 (its log's "Epoch 0"), here as everywhere
in dataguard: the last of `--epochs 4` is "epoch 3/3". Only the progress bar counts
epochs done (4/4).
"""
from __future__ import annotations

import math
import sys
import time

PIPED_WIDTH = 80


def _dice(v) -> str:
    return "  nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _hms(s: float | None) -> str:
    if s is None or s != s:
        return "-:--:--"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class LiveView:
    def __init__(self, title: str, *, live: bool | None = None, file=None):
        from rich.console import Console

        self.file = file or sys.stderr
        self.console = Console(file=self.file, stderr=file is None)
        self.live_mode = self.console.is_terminal if live is None else live
        self.title, self.labels = title, []
        self.num_epochs, self.start_epoch, self.last = None, 0, None
        self.alerts: list[str] = []
        self.phase = "starting nnU-Net (loading data, building the network) ..."
        self.t_first, self.n_seen, self.val_cases = None, 0, None
        self.deadline: float | None = None              # --until/--hours (Unix seconds)
        self.planned = False                            # the trainer fixed the epochs for the deadline
        self.epoch_times: list[float] = []              # when each epoch event came (wall clock)
        self._live = self._progress = self._task = None

    # -- events ----------------------------------------------------------------------------
    def __call__(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "start":
            self.labels, self.num_epochs = ev.get("labels") or [], ev.get("num_epochs")
            self.start_epoch = ev.get("start_epoch") or 0
            self.deadline = ev.get("deadline")
            self.phase = (f"training: {ev.get('iterations')} iterations + {ev.get('val_iterations')} validation "
                          f"batches per epoch" + (f", resuming at epoch {self.start_epoch}" if self.start_epoch else ""))
            self._open()
        elif kind == "epoch":
            self.last = ev
            self.epoch_times.append(ev.get("time") or time.time())
            self.n_seen += 1
            self.t_first = self.t_first or time.monotonic() - (ev.get("epoch_seconds") or 0)
            for c in ev.get("collapses") or []:
                self.alerts.append(f"DG801 {c['label']} collapsed: best {c['best']:.3f} at epoch {c['best_epoch']}, "
                                   f"~0 since (confirmed at epoch {c['at']})")
            if ev.get("stop"):
                self.alerts.append(f"stopping: {ev['stop']}")
            if not self.live_mode:
                self._line(ev)
        elif kind == "plan":
            self.planned = True
            self.num_epochs = ev.get("epochs") or self.num_epochs
            if self._progress is not None:
                self._progress.update(self._task, total=self.num_epochs)
            self.alerts.append(ev.get("reason") or f"{self.num_epochs} epochs fit before the deadline")
            if not self.live_mode:
                self._say(ev.get("reason") or "")
        elif kind == "trained":
            self.phase = "training done" + (f" ({ev['stop']})" if ev.get("stop") else "")
        elif kind == "validation":
            self.val_cases = ev.get("cases")
            n = f"{self.val_cases} " if self.val_cases is not None else ""
            self.phase = (f"final validation of the fold's {n}validation cases"
                          + ("" if ev.get("mirroring", True) else ", without test-time mirroring")
                          + (", saving probabilities (--npz)" if ev.get("npz") else "")
                          + (f"; {ev['workers']} export workers" if ev.get("workers") else "") + " ...")
            if not self.live_mode:
                self._say(self.phase)
        elif kind == "val_case":
            n = self.val_cases
            self.phase = (f"final validation: case {ev.get('index')}" + (f"/{n}" if n else "")
                          + f" ({ev.get('case')})"
                          + ("; then exporting and scoring" if n and ev.get("index") == n else "") + " ...")
            if not self.live_mode:
                self._say(self.phase)
        elif kind == "val_metrics":
            self.phase = "final validation: scored (validation/summary.json)"
        elif kind == "done":
            self.phase = "validation done"
        self._refresh()

    # -- drawing ---------------------------------------------------------------------------
    def _open(self) -> None:
        if not self.live_mode or self._live is not None:
            if not self.live_mode:
                self._say(self.title)
                self._say("  " + self.phase)
            return
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(TextColumn("epochs"), BarColumn(bar_width=28), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                  console=self.console)
        self._task = self._progress.add_task("epochs", total=self.num_epochs, completed=self.start_epoch)
        self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
        self._live.start()

    def _render(self):
        from rich.console import Group
        from rich.text import Text

        parts = [Text(self.title, style="bold")]
        if self._progress is not None:
            parts.append(self._progress)
        ev = self.last
        if ev is not None:
            dice = Text("pseudo Dice  ")
            for name, v in zip(self.labels, ev.get("dice") or []):
                dice.append(f"{name} ", style="dim")
                dice.append(_dice(v) + "  ", style="red" if v is not None and v == v and v < 0.02 else "")
            parts.append(dice)
            best = ev.get("best_ema")
            parts.append(Text(f"best EMA     {_dice(best)} at epoch {ev.get('best_epoch')}   "
                              f"last EMA {_dice(ev.get('ema'))}   epoch time {ev.get('epoch_seconds') or 0:.1f} s"))
            if self.deadline:
                parts.append(Text(self._deadline_text(ev)))
        for a in self.alerts[-4:]:
            parts.append(Text("! " + a, style="bold yellow"))
        parts.append(Text(self.phase, style="dim"))
        return Group(*parts)

    def wall_epoch(self, ev: dict) -> float:
        """An epoch's wall time, checkpoints and plots included (what the ETA needs): between
        the epoch events seen, else nnU-Net's epoch time."""
        t = self.epoch_times
        if len(t) >= 2:
            recent = t[-6:]
            return (recent[-1] - recent[0]) / (len(recent) - 1)
        return ev.get("epoch_seconds") or 0.0

    def _deadline_text(self, ev: dict) -> str:
        """The end this pace predicts (epochs left at the recent wall time per epoch) against --until."""
        due = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.deadline))
        if not self.planned:
            return f"timing the first epochs to fit the run before the deadline {due}"
        n, e = self.num_epochs or 0, ev.get("epoch", 0)
        end = time.time() + max(0, n - e - 1) * self.wall_epoch(ev)
        clock = time.strftime("%H:%M", time.localtime(end))
        return (f"training ends about {clock} (+ final validation); deadline {due}"
                + ("  LATE" if end > self.deadline else ""))

    def _refresh(self) -> None:
        if self._live is None:
            return
        if self.last is not None:
            self._progress.update(self._task, completed=self.last["epoch"] + 1)
        self._live.update(self._render())

    def _say(self, text: str) -> None:
        """One piped line, wrapped at 80 columns under a 2-space indent (a log file, `nohup`)."""
        import textwrap

        print(textwrap.fill(text, PIPED_WIDTH, subsequent_indent="    ", break_on_hyphens=False,
                            break_long_words=False), file=self.file, flush=True)

    def _line(self, ev: dict) -> None:
        n, e = self.num_epochs or 0, ev["epoch"]
        secs = ev.get("epoch_seconds") or 0
        eta = _hms((n - e - 1) * self.wall_epoch(ev)) if n else "-"
        self._say(f"epoch {e}/{n - 1 if n else '?'}  EMA {_dice(ev.get('ema'))} (best {_dice(ev.get('best_ema'))} "
                  f"at {ev.get('best_epoch')})  {secs:.1f} s  ETA {eta}")
        dice = "  ".join(f"{name} {_dice(v)}" for name, v in zip(self.labels, ev.get("dice") or []))
        if dice:
            self._say("  " + dice)
        for c in ev.get("collapses") or []:
            self._say(f"! DG801 {c['label']} collapsed: best {c['best']:.3f} at epoch {c['best_epoch']}")
        if ev.get("stop"):
            self._say(f"stopping: {ev['stop']}")
        if self.deadline:
            self._say("  " + self._deadline_text(ev))

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None
