"""Undo a repair run from its journal, and list what quarantine holds.

Restore puts every quarantined file back (verified byte-identical by blake3; a link or a
FIFO by its target or type) and moves what the run wrote into a quarantine of its own — even
an undo deletes nothing. It works from a torn journal too: a step that was announced but not
confirmed is checked against the disk. Moves the run rolled back itself (a case whose repair
failed half-way) are skipped.

It obeys only records that this user's dataguard wrote (each carries a MAC, see
`engine.own_state`) and whose paths stay inside the dataset and its run's quarantine; a
`.dataguard/` that is or holds a link stops it before any change.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.layout import Dataset
from ..engine.own_state import NOT_OURS, confined, ensure_safe, load_key, verified_records
from ..errors import DataguardError
from ..errors import RestoreError  # noqa: F401 - defined in errors
from ..fsio import OutsideError, check_parents, makedirs_inside
from ..engine.journal import (
    DG_DIR,
    Journal,
    _ident_of,
    _move,
    journals,
    matches,
    new_run_id,
    read_journal,
    without_rolled_back,
)
from ..engine.lock import DatasetLock


@dataclass
class RestoreReport:
    run_id: str
    restored: list[str] = field(default_factory=list)    # put back from quarantine
    removed: list[str] = field(default_factory=list)     # written by the run, moved away
    problems: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)     # journals (part/path) this user's dataguard did not write
    dataset: str = ""                                     # whose run it was (a run id spans datasets)


def _roots(ds: Dataset) -> list[tuple[str, Path]]:
    return [(k, Path(v)) for k, v in ds.roots().items()]


def foreign_journals(ds: Dataset) -> list[str]:
    """Journals (part/name) holding records this user's dataguard did not write: never obeyed."""
    key = load_key(create=False)
    out = []
    for part, root in _roots(ds):
        for p in journals(root):
            try:
                _, bad = verified_records(p, key)
            except (OSError, DataguardError):
                bad = [0]
            if bad:
                out.append(f"{part}/{DG_DIR}/journal/{p.name}")
    return out


def runs(ds: Dataset) -> list[str]:
    """Repair runs recorded for a dataset by this user's dataguard, oldest first (restores and
    undone runs excluded; a journal no record of which verifies is no run)."""
    ids = set()
    for _, root in _roots(ds):
        for p in journals(root):
            try:
                entries = read_journal(p)
            except (OSError, DataguardError):
                continue
            if not entries or entries[0].get("op") == "restore-of":
                continue
            if any(e.get("op") == "restored" for e in entries):
                continue
            ids.add(p.stem)
    return sorted(ids)


def restore(datasets: list[Dataset], run_id: str | None = None) -> list[RestoreReport]:
    for ds in datasets:                       # before any change: .dataguard must be ours
        for _, root in _roots(ds):
            ensure_safe(root)
    out = []
    foreign = {ds.name: foreign_journals(ds) for ds in datasets}     # verified once, named below
    for ds in datasets:
        available = runs(ds)
        rid = run_id or (available[-1] if available else None)
        if rid is None:
            continue
        if run_id and rid not in available:
            planted = [j for j in foreign[ds.name] if j.endswith(f"/{rid}.jsonl")]
            if planted:
                raise RestoreError(f"{ds.name}: journal {planted[0]} {NOT_OURS}")
            continue
        report = _restore_dataset(ds, rid)
        report.ignored += foreign[ds.name]
        out.append(report)
    if not out:
        which = f"run {run_id}" if run_id else "any repair run"
        planted = [j for names in foreign.values() for j in names]
        extra = f" ({len(planted)} journal(s) {NOT_OURS.split(':')[0]}: {', '.join(planted[:3])})" if planted else ""
        raise RestoreError(f"nothing to restore: no journal of {which} in "
                           f"{', '.join(d.name for d in datasets)}{extra}")
    return out


def _refusal(e: dict, rid: str, root: Path) -> str | None:
    """Why a verified record is still not obeyed (paths outside, a linked folder on the way)."""
    why = confined(e, rid)
    if why is None:
        try:
            for k in ("path", "to"):
                if k in e:
                    check_parents(root, e[k])
        except OutsideError as err:
            why = f"{err.strerror}: {err.filename}"
    return why


def _restore_dataset(ds: Dataset, rid: str) -> RestoreReport:
    report = RestoreReport(rid, dataset=ds.name)
    undo_id = new_run_id()
    with contextlib.ExitStack() as stack:
        for _, root in _roots(ds):
            stack.enter_context(DatasetLock(root))
        for part, root in _roots(ds):
            jpath = root / DG_DIR / "journal" / f"{rid}.jsonl"
            if not os.path.lexists(jpath):
                continue
            entries = []
            for e in without_rolled_back(read_journal(jpath)):   # a failed case already put back
                if e.get("op") not in ("place", "quarantine"):
                    continue
                why = _refusal(e, rid, root)
                if why:
                    report.problems.append(f"{part}/{e.get('path')}: refused ({why}): not restored")
                else:
                    entries.append(e)
            undo = Journal(root, undo_id)
            undo.write(op="restore-of", run=rid)
            placed = [e for e in entries if e.get("op") == "place"]
            quarantined = [e for e in entries if e.get("op") == "quarantine"]
            # 1. what the run wrote goes away (into the undo run's quarantine), newest first
            for e in reversed(placed):
                if matches(root / e["path"], e):
                    undo.quarantine_file(e["path"], reason=f"written by repair {rid}")
                    report.removed.append(f"{part}/{e['path']}")
            # 2. what the run moved away comes back, verified
            for e in reversed(quarantined):
                src, dst = root / e["to"], root / e["path"]
                if not os.path.lexists(src):
                    if matches(dst, e):
                        continue      # the move never happened (crash before it)
                    report.problems.append(f"{part}/{e['path']}: quarantined copy {e['to']} is missing")
                    continue
                if not matches(src, e):
                    report.problems.append(f"{part}/{e['path']}: quarantined copy changed since; left in place")
                    continue
                if os.path.lexists(dst):
                    undo.quarantine_file(e["path"], reason=f"in the way of restoring repair {rid}")
                if "/" in e["path"]:
                    makedirs_inside(root, e["path"].rsplit("/", 1)[0])
                undo.write(op="restore", path=e["path"], **{"from": e["to"]}, **_ident_of(e))
                _move(src, dst)
                if not matches(dst, e):
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
    """Every file currently held in quarantine by this user's repairs, with the reason it was moved."""
    out = []
    for ds in datasets:
        for part, root in _roots(ds):
            for jp in journals(root):
                try:
                    entries = read_journal(jp)
                except (OSError, DataguardError):
                    continue
                for e in entries:
                    if e.get("op") != "quarantine" or confined(e, jp.stem) is not None:
                        continue
                    held = root / e["to"]
                    if os.path.lexists(held):
                        out.append(Held(ds.name, jp.stem, f"{part}/{e['path']}", f"{part}/{e['to']}",
                                        os.lstat(held).st_size, e.get("reason", "")))
    return out
