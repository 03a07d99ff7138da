"""nnU-Net training logs as data: epochs, per-label pseudo Dice, the EMA, collapse, wasted epochs.

Reads `training_log_*.txt` as nnU-Net writes it (`<timestamp>: Epoch 12`, `Pseudo dice
[np.float32(0.89), nan, ...]` with numpy 2 or `[0.89, nan, ...]` with numpy 1, `Epoch time:
48.2 s`, `Yayy! New best EMA pseudo Dice: 0.58`) and recomputes nnU-Net's EMA
(`0.9 * ema + 0.1 * nanmean(dice)`), so a run can be judged while it is still going.

Findings: DG801 (a label learnt, then sat at ~0 while the others held), DG804 (the run went
on for more than `patience` epochs past its best EMA). `nan` (a label absent from a
validation batch) is never read as 0.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..checks.metadata import METADATA_LIMIT
from ..errors import LogError, RecordError  # noqa: F401 - LogError: defined in errors
from ..findings import Finding, finding
from ..fsio import read_json
from ..spec import parse_spec
from ..visual import label_colour
from . import record

LOG_GLOB = "training_log_*.txt"
_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?: (.*)$")
_NUMBER = re.compile(r"np\.float(?:16|32|64)\(\s*([^)]*)\)|(nan|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf)")

# DG801 defaults: learnt (best >= LEARNT), then <= NEAR_ZERO for COLLAPSE_EPOCHS epochs with a
# value (nan epochs neither count nor break the streak) while the other labels' mean stays
# >= HOLD x their mean at the collapsed label's best epoch
LEARNT, NEAR_ZERO, COLLAPSE_EPOCHS, HOLD = 0.2, 0.02, 10, 0.5
DEFAULT_PATIENCE = 50


@dataclass
class LabelStats:
    name: str
    best: float | None = None
    best_epoch: int | None = None
    last: float | None = None


@dataclass
class Run:
    log: str
    dataset: str | None
    labels: list[str]                                   # names, in pseudo Dice order
    epochs: list[int] = field(default_factory=list)
    dice: list[list[float]] = field(default_factory=list)   # per epoch, per label (nan kept)
    ema: list[float] = field(default_factory=list)
    epoch_seconds: list[float | None] = field(default_factory=list)
    finished: bool = False
    findings: list[Finding] = field(default_factory=list)
    iterations: int | None = None             # per epoch, from dataguard's run record beside the log

    @property
    def epoch_time(self) -> float | None:
        """The typical epoch (median of nnU-Net's epoch times, the warm-up epoch 0 left out)."""
        secs = [s for s in (self.epoch_seconds[1:] if len(self.epoch_seconds) > 1 else self.epoch_seconds) if s]
        return sorted(secs)[len(secs) // 2] if secs else None

    @property
    def best_epoch(self) -> int | None:
        vals = [(e, v) for e, v in zip(self.epochs, self.ema) if not math.isnan(v)]
        return max(vals, key=lambda ev: (ev[1], -ev[0]))[0] if vals else None

    @property
    def best_ema(self) -> float | None:
        b = self.best_epoch
        return None if b is None else self.ema[self.epochs.index(b)]

    def label_stats(self) -> dict[str, LabelStats]:
        out = {}
        for j, name in enumerate(self.labels):
            s = LabelStats(name)
            for e, row in zip(self.epochs, self.dice):
                v = row[j] if j < len(row) else math.nan
                if math.isnan(v):
                    continue
                s.last = v
                if s.best is None or v > s.best:
                    s.best, s.best_epoch = v, e
            out[name] = s
        return out

    def to_dict(self) -> dict:
        return {"log": self.log, "dataset": self.dataset, "epochs": len(self.epochs),
                "last_epoch": self.epochs[-1] if self.epochs else None, "best_epoch": self.best_epoch,
                "best_ema": _num(self.best_ema), "finished": self.finished,
                "epoch_seconds": _num(self.epoch_time), "iterations": self.iterations,
                "iteration_seconds": _num(self.epoch_time / self.iterations)
                if self.epoch_time and self.iterations else None,
                "labels": {n: {"best": _num(s.best), "best_epoch": s.best_epoch, "last": _num(s.last)}
                           for n, s in self.label_stats().items()},
                "findings": [f.to_dict() for f in self.findings]}


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)


def parse_numbers(text: str) -> list[float]:
    """`[np.float32(0.89), np.float32(nan), 0.5, nan]` -> [0.89, nan, 0.5, nan]."""
    out = []
    for m in _NUMBER.finditer(text):
        tok = (m.group(1) if m.group(1) is not None else m.group(2)).strip()
        try:
            out.append(float(tok))
        except ValueError:
            out.append(math.nan)
    return out


def parse_log(text: str, log: str = "", labels: list[str] | None = None, dataset: str | None = None) -> Run:
    """One run from the text of one nnU-Net training log."""
    run = Run(log=log, dataset=dataset, labels=list(labels or []))
    epoch = None
    for raw in text.splitlines():
        m = _LINE.match(raw.strip())
        if not m:
            continue
        msg = m.group(1).strip()
        if msg.startswith("Epoch time:"):
            nums = parse_numbers(msg[len("Epoch time:"):])
            if run.epoch_seconds and nums:
                run.epoch_seconds[-1] = nums[0]
        elif msg.startswith("Epoch "):
            try:
                epoch = int(msg.split()[1])
            except (IndexError, ValueError):
                continue
        elif msg.startswith("Pseudo dice") and epoch is not None:
            values = parse_numbers(msg[len("Pseudo dice"):])
            if epoch in run.epochs:                 # a restarted epoch: the last one counts
                i = run.epochs.index(epoch)
                del run.epochs[i:], run.dice[i:], run.epoch_seconds[i:]
            run.epochs.append(epoch)
            run.dice.append(values)
            run.epoch_seconds.append(None)
        elif msg.startswith("Training done"):
            run.finished = True
    n = max((len(d) for d in run.dice), default=0)
    while len(run.labels) < n:
        run.labels.append(f"label {len(run.labels) + 1}")
    run.ema = ema_of(run.dice)
    return run


def ema_of(dice: list[list[float]]) -> list[float]:
    """nnU-Net's EMA of the mean foreground pseudo Dice (nanmean per epoch)."""
    out: list[float] = []
    for row in dice:
        vals = [v for v in row if not math.isnan(v)]
        mean = sum(vals) / len(vals) if vals else math.nan
        out.append(mean if not out else 0.9 * out[-1] + 0.1 * mean)
    return out


def label_names_from(meta) -> list[str] | None:
    """Foreground label (or region) names in pseudo Dice order, from a dataset.json value;
    None when it has no usable labels, so the caller looks for another copy."""
    spec = parse_spec(meta)
    return spec.dice_names if spec.labels else None


def label_names_for(log: Path) -> tuple[list[str], str | None]:
    """Foreground label names in pseudo Dice order, from the dataset.json nnU-Net copies
    beside the fold folders; and the dataset name from the path."""
    dataset = next((p for p in reversed(log.parts) if re.match(r"^Dataset\d{3}_", p)), None)
    for folder in (log.parent.parent, log.parent):
        try:
            names = label_names_from(read_json(folder / "dataset.json", METADATA_LIMIT))
        except (OSError, ValueError):
            continue
        if names is not None:
            return names, dataset
    return [], dataset


def find_logs(path: Path) -> list[Path]:
    """A log file, or every training log below a fold, trainer or dataset results folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LogError(f"no such file or folder: {path}")
    logs = sorted(p for p in path.rglob(LOG_GLOB) if p.is_file())
    if not logs:
        raise LogError(f"no nnU-Net training log ({LOG_GLOB}) under {path}")
    return logs


def load_runs(path: Path, *, patience: int = DEFAULT_PATIENCE) -> list[Run]:
    runs = []
    for log in find_logs(path):
        names, dataset = label_names_for(log)
        run = parse_log(log.read_text("utf-8", errors="replace"), str(log), names, dataset)
        run.iterations = _recorded_iterations(log.parent)
        run.findings = judge(run, patience=patience)
        runs.append(run)
    return runs


def _recorded_iterations(fold_folder: Path) -> int | None:
    """Training batches per epoch as dataguard's run record says (None: no record, or nnU-Net's
    base trainer's own count, which the log does not state)."""
    try:
        rec = record.load(fold_folder)
    except (RecordError, OSError):
        return None
    return rec.settings.iterations_per_epoch if rec is not None else None


def collapses(run: Run, *, learnt: float = LEARNT, near_zero: float = NEAR_ZERO,
              epochs: int = COLLAPSE_EPOCHS, hold: float = HOLD) -> list[tuple[int, int, float, int]]:
    """(label index, best epoch, best value, epoch the collapse was confirmed) per collapsed label."""
    out = []
    for j in range(len(run.labels)):
        best, best_e, streak, others_at_best = None, None, 0, None
        for i, (e, row) in enumerate(zip(run.epochs, run.dice)):
            v = row[j] if j < len(row) else math.nan
            if math.isnan(v):
                continue
            others = [x for k, x in enumerate(row) if k != j and not math.isnan(x)]
            others_mean = sum(others) / len(others) if others else None
            if best is None or v > best:
                best, best_e, streak, others_at_best = v, e, 0, others_mean
                continue
            if best >= learnt and v <= near_zero:
                holding = others_at_best is None or others_mean is None or others_mean >= hold * others_at_best
                streak = streak + 1 if holding else 0
                if streak >= epochs:
                    out.append((j, best_e, best, e))
                    break
            else:
                streak = 0
    return out


def judge(run: Run, *, patience: int = DEFAULT_PATIENCE) -> list[Finding]:
    """DG801 per collapsed label, DG804 when the run outlived its best EMA by > patience epochs."""
    out = []
    for j, best_e, best, at in collapses(run):
        out.append(finding("DG801", run.log, f"label '{run.labels[j]}' collapsed: pseudo Dice peaked at "
                           f"{best:.3f} in epoch {best_e}, then stayed <= {NEAR_ZERO} for "
                           f"{COLLAPSE_EPOCHS} epochs (confirmed at epoch {at}) while the other labels held"))
    b = run.best_epoch
    if b is not None and run.epochs and run.epochs[-1] - b > patience:
        extra = run.epochs[-1] - b - patience
        secs = [s for s in run.epoch_seconds if s]
        cost = f", about {extra * sum(secs) / len(secs) / 3600:.1f} h" if secs else ""
        out.append(finding("DG804", run.log, f"ran {run.epochs[-1] - b} epochs past its best EMA pseudo Dice "
                           f"({run.best_ema:.4f} at epoch {b}); early stopping with patience {patience} would "
                           f"have saved {extra} epochs{cost}"))
    slow = slowdown(run)
    if slow is not None:
        early, late = slow
        out.append(finding("DG908", run.log, f"epochs got slower: {late:.0f} s in the last quarter of the run "
                           f"against {early:.0f} s early on ({late / early:.1f}x); usually swap, a disk cache that "
                           f"no longer holds the data, or another job on the machine (dataguard doctor "
                           f"--throughput says which bounds the epoch)"))
    import dataclasses

    return [dataclasses.replace(f, dataset=run.dataset) for f in out]


SLOWDOWN = 1.5              # late epochs this much slower than early ones (medians) flag the run
SLOWDOWN_MIN_EPOCHS = 8


def slowdown(run: Run) -> tuple[float, float] | None:
    """(early, late) median epoch seconds when the run's epochs got SLOWDOWN times slower: the
    first quarter (without epoch 0, the warm-up) against the last quarter; None otherwise."""
    secs = [s for s in run.epoch_seconds[1:] if s]
    if len(secs) < SLOWDOWN_MIN_EPOCHS:
        return None
    q = max(2, len(secs) // 4)
    early, late = sorted(secs[:q])[q // 2], sorted(secs[-q:])[q // 2]
    return (early, late) if early > 0 and late >= SLOWDOWN * early else None



def plot_runs(runs: list[Run], path: Path | str) -> Path:
    """PNG: per-label pseudo Dice (thin) and the EMA (thick) per run, best EMA and collapses marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator


    fig = Figure(figsize=(10, 2.6 * max(1, len(runs)) + 0.6))
    FigureCanvasAgg(fig)
    for k, run in enumerate(runs):
        ax = fig.add_subplot(len(runs), 1, k + 1)
        for j, name in enumerate(run.labels):
            ys = [row[j] if j < len(row) else math.nan for row in run.dice]
            ax.plot(run.epochs, ys, lw=1, color=[c / 255 for c in label_colour(j + 1)], label=name)
        ax.plot(run.epochs, run.ema, lw=2.5, color="black", label="EMA (mean)")
        if run.best_epoch is not None:
            ax.axvline(run.best_epoch, color="black", ls=":", lw=1,
                       label=f"best EMA {run.best_ema:.3f} (epoch {run.best_epoch})")
        for j, best_e, _, at in collapses(run):
            ax.axvline(at, color=[c / 255 for c in label_colour(j + 1)], ls="--", lw=1.5,
                       label=f"{run.labels[j]} collapsed (best at {best_e})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("pseudo Dice")
        ax.set_title(Path(run.log).parent.name + "  " + Path(run.log).name, fontsize=9)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.axes[-1].set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(str(path), format="png", dpi=90)
    return Path(path)
