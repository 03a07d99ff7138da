"""Undo a repair run from its journal, and list what quarantine holds.

Restore puts every quarantined file back (verified byte-identical by blake3) and moves
what the run wrote into a quarantine of its own — even an undo deletes nothing. It
works from a torn journal too: a step that was announced but not confirmed is
checked against the disk. Moves the run rolled back itself (a case whose repair failed
half-way) are skipped.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.layout import Dataset
from ..errors import DataguardError
from ..fsio import blake3_file
from ..fsio import move_durably as _move
from .journal import (
    DG_DIR,
    Journal,
    journals,
    new_run_id,
    read_journal,
    without_rolled_back,
)
from .lock import DatasetLock


class RestoreError(DataguardError):
    """Nothing to restore, unknown run, or a file that no longer matches (exit 2)."""


@dataclass
class RestoreReport:
    run_id: str
    restored: list[str] = field(default_factory=list)    # put back from quarantine
    removed: list[str] = field(default_factory=list)     # written by the run, moved away
    problems: list[str] = field(default_factory=list)


def _roots(ds: Dataset) -> list[tuple[str, Path]]:
    return [(k, Path(v)) for k, v in ds.roots().items()]


def runs(ds: Dataset) -> list[str]:
    """Repair runs recorded for a dataset, oldest first (restores and undone runs excluded)."""
    ids = set()
    for _, root in _roots(ds):
        for p in journals(root):
            entries = read_journal(p)
            if entries and entries[0].get("op") == "restore-of":
                continue
            if any(e.get("op") == "restored" for e in entries):
                continue
            ids.add(p.stem)
    return sorted(ids)


def restore(datasets: list[Dataset], run_id: str | None = None) -> list[RestoreReport]:
    out = []
    for ds in datasets:
        available = runs(ds)
        rid = run_id or (available[-1] if available else None)
        if rid is None:
            continue
        if run_id and rid not in available:
            continue
        out.append(_restore_dataset(ds, rid))
    if not out:
        which = f"run {run_id}" if run_id else "any repair run"
        raise RestoreError(f"nothing to restore: no journal of {which} in {', '.join(d.name for d in datasets)}")
    return out


def _restore_dataset(ds: Dataset, rid: str) -> RestoreReport:
    report = RestoreReport(rid)
    undo_id = new_run_id()
    with contextlib.ExitStack() as stack:
        for _, root in _roots(ds):
            stack.enter_context(DatasetLock(root))
        for part, root in _roots(ds):
            jpath = root / DG_DIR / "journal" / f"{rid}.jsonl"
            if not jpath.exists():
                continue
            entries = without_rolled_back(read_journal(jpath))   # a failed case already put back
            undo = Journal(root, undo_id)
            undo.write(op="restore-of", run=rid)
            placed = [e for e in entries if e.get("op") == "place"]
            quarantined = [e for e in entries if e.get("op") == "quarantine"]
            # 1. what the run wrote goes away (into the undo run's quarantine), newest first
            for e in reversed(placed):
                p = root / e["path"]
                if p.exists() and blake3_file(p) == e["blake3"]:
                    undo.quarantine_file(e["path"], reason=f"written by repair {rid}")
                    report.removed.append(f"{part}/{e['path']}")
            # 2. what the run moved away comes back, verified
            for e in reversed(quarantined):
                src, dst = root / e["to"], root / e["path"]
                if not src.exists():
                    if dst.exists() and blake3_file(dst) == e["blake3"]:
                        continue      # the move never happened (crash before it)
                    report.problems.append(f"{part}/{e['path']}: quarantined copy {e['to']} is missing")
                    continue
                if blake3_file(src) != e["blake3"]:
                    report.problems.append(f"{part}/{e['path']}: quarantined copy changed since; left in place")
                    continue
                if dst.exists():
                    undo.quarantine_file(e["path"], reason=f"in the way of restoring repair {rid}")
                dst.parent.mkdir(parents=True, exist_ok=True)
                undo.write(op="restore", path=e["path"], **{"from": e["to"]}, blake3=e["blake3"])
                _move(src, dst)
                if blake3_file(dst) != e["blake3"]:
                    report.problems.append(f"{part}/{e['path']}: restored bytes differ")
                report.restored.append(f"{part}/{e['path']}")
            Journal(root, rid).write(op="restored", by=undo_id)
    return report


@dataclass
class Held:
    dataset: str
    run_id: str
    path: str          # where it came from (raw/... or preprocessed/...)
    stored: str        # where it is now, relative to the dataset folder
    size: int
    reason: str


def quarantine_list(datasets: list[Dataset]) -> list[Held]:
    """Every file currently held in quarantine, with the reason it was moved."""
    out = []
    for ds in datasets:
        for part, root in _roots(ds):
            for jp in journals(root):
                for e in read_journal(jp):
                    if e.get("op") != "quarantine":
                        continue
                    held = root / e["to"]
                    if held.exists():
                        out.append(Held(ds.name, jp.stem, f"{part}/{e['path']}", f"{part}/{e['to']}",
                                        held.stat().st_size, e.get("reason", "")))
    return out
