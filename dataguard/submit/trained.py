"""A trained fold is finished or it is not, and what the run it came from was started with.

A fold is finished when nnU-Net wrote `checkpoint_final.pth` at the end of its training: a
regular file, not a link. A fold stopped by Ctrl-C, a crash or a full disk has
`checkpoint_latest.pth` / `checkpoint_best.pth` but no final checkpoint, and no (or half a)
`validation/` folder. `submit`, `ensemble suggest` and `evaluate` use finished folds only,
unless asked (`--include-unfinished`), and say which folds they skip (DG806).

Everything here reads a results folder someone else may have written: folders and files are
lstat'ed (a `fold_2` that is a link is not followed), small JSON files are read bounded.
"""
from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from ..checks.metadata import METADATA_LIMIT
from ..findings import Finding, finding
from ..fsio import read_json, what_is

from ..train.record import RecordError
from ..train.record import load as load_record

FINAL = "checkpoint_final.pth"
CHECKPOINTS = ("final", "best")
VALIDATION_STAMP = "dataguard_validation.json"      # which checkpoint made fold_X/validation


@dataclass(frozen=True)
class FoldState:
    """One `fold_K` folder of a trainer folder: finished (has its final checkpoint) or why not."""
    fold: str
    folder: Path
    why: str = ""                       # "" when finished

    @property
    def finished(self) -> bool:
        return not self.why

    @property
    def usable(self) -> bool:
        """A folder of its own (not a link): may be used when asked, finished or not."""
        return not self.why.startswith("fold_")


def fold_state(trainer_folder: Path, fold: str) -> FoldState:
    folder = Path(trainer_folder) / f"fold_{fold}"
    try:
        st = os.lstat(folder)
    except OSError:
        return FoldState(fold, folder, f"fold_{fold} does not exist")
    if not stat.S_ISDIR(st.st_mode):
        return FoldState(fold, folder, f"fold_{fold} is {what_is(st.st_mode)}, not a folder: not followed")
    try:
        st = os.lstat(folder / FINAL)
    except OSError:
        return FoldState(fold, folder, f"no {FINAL}: its training did not finish")
    if not stat.S_ISREG(st.st_mode):
        return FoldState(fold, folder, f"its {FINAL} is {what_is(st.st_mode)}, not a regular file")
    return FoldState(fold, folder)


def fold_names(trainer_folder: Path) -> list[str]:
    """The K of every `fold_K` entry (folders and anything else so named), sorted: digits by
    value, then the others (`all`)."""
    try:
        names = [e.name[5:] for e in os.scandir(trainer_folder) if e.name.startswith("fold_") and e.name[5:]]
    except OSError:
        return []
    return sorted(names, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))


@dataclass
class FoldChoice:
    """Which folds of a model a command uses, and which it skips (with why)."""
    used: list[FoldState]
    skipped: list[FoldState]

    @property
    def unfinished_used(self) -> list[FoldState]:
        return [s for s in self.used if not s.finished]


def choose_folds(trainer_folder: Path, folds: list[str], include_unfinished: bool = False) -> FoldChoice:
    """Finished folds of `folds`; unfinished ones too when asked (never one that is not a
    folder of its own)."""
    used, skipped = [], []
    for k in folds:
        s = fold_state(trainer_folder, k)
        (used if s.finished or (include_unfinished and s.usable) else skipped).append(s)
    return FoldChoice(used, skipped)


def fold_findings(model: str, choice: FoldChoice, resume: dict[str, str] | None = None) -> list[Finding]:
    """DG806 for each fold skipped because it is unfinished, and each used although it is.
    `resume`: fold -> the command that finishes it."""
    out = []
    for s in choice.skipped:
        tail = f"; finish it: {resume[s.fold]}" if resume and s.fold in resume else ""
        out.append(finding("DG806", str(s.folder), f"{model} fold {s.fold} skipped: {s.why}{tail} "
                           f"(or --include-unfinished)" if s.usable else f"{model} fold {s.fold} skipped: {s.why}"))
    for s in choice.unfinished_used:
        out.append(finding("DG806", str(s.folder), f"{model} fold {s.fold} used although unfinished "
                           f"(--include-unfinished): {s.why}"))
    return out


def describe(model: str, choice: FoldChoice) -> str:
    """One line: `2d: folds 0, 1; skipped fold 2 (no checkpoint_final.pth: ...)`."""
    used = ", ".join(s.fold + ("" if s.finished else " (unfinished)") for s in choice.used) or "none"
    line = f"{model}: fold{'s' if len(choice.used) != 1 else ''} {used}"
    if choice.skipped:
        line += "; skipped " + "; ".join(f"fold {s.fold} ({s.why})" for s in choice.skipped)
    return line


# --- what a run was started with ----------------------------------------------------------------
@dataclass
class RunFacts:
    """What advice about a fold needs to know of the run that made it."""
    device: str
    npz: bool | None = None
    recorded: bool = False              # False: the device is this machine's, not the run's


def machine_device() -> str:
    """cuda when torch (already loaded) sees a CUDA GPU; without torch loaded, cuda when an
    NVIDIA driver is present; cpu otherwise (nnU-Net's `-device cpu` runs anywhere)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            return "cuda" if torch.cuda.is_available() else "cpu"
        except Exception:               # noqa: BLE001 - a broken torch: the safe answer
            return "cpu"
    return "cuda" if os.path.exists("/proc/driver/nvidia/version") else "cpu"


def run_facts(fold_folder: Path) -> RunFacts:
    """The device (and --npz) the fold's run was started with, from its run record; this
    machine's device where the record does not say."""
    try:
        rec = load_record(Path(fold_folder))
    except RecordError:                 # not a record dataguard can trust: this machine's device
        rec = None
    if rec is not None and not rec.legacy and rec.device in ("cuda", "cpu", "mps"):
        return RunFacts(rec.device, rec.npz, True)
    return RunFacts(machine_device())   # none, or a settings-only file whose device is a default


def validation_checkpoint(fold_folder: Path) -> str:
    """Which checkpoint made `fold_K/validation`: what dataguard's validation run recorded
    beside it, else `final` (the weights training ends with, nnU-Net's own validation)."""
    stamp = Path(fold_folder) / VALIDATION_STAMP
    try:
        raw = read_json(stamp, METADATA_LIMIT)
    except (OSError, ValueError):
        return "final"
    try:
        if os.lstat(stamp).st_mtime < os.lstat(Path(fold_folder) / FINAL).st_mtime:
            return "final"              # trained again since: training's own validation is newer
    except OSError:
        pass                            # no final checkpoint (an unfinished fold): the stamp says
    got = raw.get("checkpoint") if isinstance(raw, dict) else None
    return got if got in CHECKPOINTS else "final"
