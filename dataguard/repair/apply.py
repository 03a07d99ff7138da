"""Carry out a repair plan: stage, verify, then swap — journalled, locked, undoable.

Per rebuilt case: the new files are written to a staging folder on the same
filesystem, checked with the scanner's own per-file checks, then the old files are
moved to quarantine and the new ones renamed into place. A SIGKILL at any moment
leaves the case old (in place or in quarantine, where `restore` finds it) or new and
valid; a crash between the two halves leaves the case missing, which the next
`repair` sees (DG206/DG207) and rebuilds. A step that fails (an unreadable file, a move
the OS refuses) puts back at once what its action had moved, so a case is repaired whole
or left as it was. Before the first move every folder the plan writes is probed: a
read-only dataset is refused up front, with nothing changed.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..engine.layout import Dataset
from ..engine.own_state import ensure_safe
from ..errors import UnsafeState
from ..errors import RepairError, NotWritableError  # noqa: F401 - defined in errors
from ..findings import ActionKind, path_lines
from ..fsio import NOFOLLOW, OutsideError, check_parents, makedirs_inside
from ..engine.journal import DG_DIR, Journal, new_run_id
from ..engine.lock import DatasetLock
from .actions import ApplyContext, Outcome, handler
from .actions.quarantine import files_below as _files_below  # noqa: F401 - moved with its handler
from .actions.rebuild import _WORKER_PREPROCESSORS, case_files, stage_case  # noqa: F401 - (old names)
from .actions.rebuild import submit as _submit_rebuild
from .plan import Action, prepare

Log = Callable[[str], None]


@dataclass
class RepairReport:
    run_id: str
    outcomes: list[Outcome] = field(default_factory=list)
    cancelled: bool = False

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def _roots(ds: Dataset) -> dict[str, Path]:
    return {k: Path(v) for k, v in ds.roots().items()}


def _split(target: str) -> tuple[str, str]:
    part, _, rel = target.partition("/")
    return part, rel


def apply_plan(actions: list[Action], datasets: list[Dataset], *, run_id: str | None = None,
               log: Log = lambda m: None, scan_result=None, on_event=None, cancel=None,
               executor=None) -> RepairReport:
    """Apply every non-blocked action; one lock per dataset folder for the whole run.

    Each action goes to the handler registered for its kind (repair.actions.HANDLERS); an
    unknown kind raises ValueError before anything changes. The plan carries what each
    handler needs (plan_repairs put it in `action.payload`). scan_result: deprecated and
    only used to fill in the payload of actions built by hand without it. on_event(dict)
    hears each action start and end; cancel (a
    threading.Event) stops between actions, leaving finished ones journalled.
    executor (e.g. a Dask client's): the re-preprocessing of cases runs there in parallel,
    each into its own staging folder; verification, the journal and the swap stay here,
    one action at a time, so atomicity and undo never depend on a worker.
    """
    run_id = run_id or new_run_id()
    report = RepairReport(run_id)
    by_name = {d.name: d for d in datasets}
    todo = [a for a in actions if not a.blocked]
    handlers = [handler(a.kind) for a in todo]          # an unknown kind: refused before any change
    if scan_result is not None:
        prepare([a for a in todo if not a.payload], scan_result)
    for name in sorted({a.dataset for a in todo}):      # before any change: .dataguard must be ours
        for root in _roots(by_name[name]).values():
            ensure_safe(root)
    check_writable(todo, by_name)
    with contextlib.ExitStack() as stack:
        for name in sorted({a.dataset for a in todo}):
            for root in _roots(by_name[name]).values():
                stack.enter_context(DatasetLock(root))
                # staging left by a killed run: our own scratch, safe to drop under the lock
                _drop_scratch(root / DG_DIR / "tmp")
        cache: dict = {}                                 # shared by the run's actions (preprocessors)
        staged_remotely = _stage_remotely(todo, by_name, run_id, executor) if executor is not None else {}
        emit = on_event or (lambda e: None)
        for i, (a, h) in enumerate(zip(todo, handlers)):
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                emit({"event": "cancelled", "index": i, "total": len(todo), "action": a, "detail": ""})
                break
            emit({"event": "started", "index": i, "total": len(todo), "action": a, "detail": a.describe()})
            ds = by_name[a.dataset]
            journals = {part: Journal(root, run_id) for part, root in _roots(ds).items()}
            try:
                out = h.run(a, ApplyContext(ds, journals, log, cache, staged_remotely.get(id(a))))
            except Exception as e:  # one failed action must not stop the others
                out = _rolled_back(a, journals, f"{type(e).__name__}: {e}")
            report.outcomes.append(out)
            emit({"event": "done" if out.ok else "failed", "index": i, "total": len(todo), "action": a,
                  "detail": out.detail})
            log(outcome_lines(a, out))
        for j in {j.staging for ds in datasets for j in
                  (Journal(r, run_id) for r in _roots(ds).values())}:
            _drop_scratch(j)                           # our own scratch space, never user data
    return report


LOG_WIDTH = 80


def outcome_lines(a, out, width: int = LOG_WIDTH) -> str:
    """"done: quarantine <target>" and, indented under it, what was done: lines of at most
    `width` (a path breaks after its slashes/underscores, text at words)."""
    import textwrap


    head = f"{'done' if out.ok else 'FAILED'}: {a.kind} "
    target = str(a.target)
    lines = [head + target] if len(head) + len(target) <= width else \
        [head.rstrip()] + ["  " + p for p in path_lines(target, width - 2).split("\n")]
    if out.detail:
        lines += textwrap.wrap(str(out.detail), width=width, initial_indent="  ", subsequent_indent="  ",
                               break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines)


def _drop_scratch(folder: Path) -> None:
    """Remove dataguard's own staging folder: only a real folder (lstat), never through a link
    (rmtree's fd-based walk does not follow links inside it either)."""
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return
    except OSError:
        return
    shutil.rmtree(folder, ignore_errors=True)


def _rolled_back(a: Action, journals: dict[str, Journal], reason: str) -> Outcome:
    """A step failed half-way: put back what this action moved, so its case is whole again."""
    back, problems = 0, []
    for part, j in journals.items():
        try:
            n, p = j.roll_back(reason)
        except Exception as e:  # the journal itself failed: leave the rest for `restore`
            n, p = 0, [f"{part}: rollback stopped ({type(e).__name__}: {e}); `dataguard restore` undoes the rest"]
        back += n
        problems += p
    if back or problems:
        reason += f"; rolled back: {back} file(s) put back in place"
    if problems:
        reason += "; rollback incomplete: " + "; ".join(problems[:3])
    return Outcome(a, False, reason)


def check_writable(todo: list[Action], by_name: dict[str, Dataset]) -> None:
    """Refuse before the first change when a folder the plan writes cannot be written.

    Root ignores file modes, so only writing tells: a tiny file is created and removed in
    `.dataguard/` of every dataset folder (where the lock and journal go) and in every folder
    an action moves files out of or into. NotWritableError names the first that fails.
    """
    folders: dict[Path, Path] = {}
    for name in sorted({a.dataset for a in todo}):
        for root in _roots(by_name[name]).values():
            folders[root / DG_DIR] = root
    created = [f for f in folders if not os.path.lexists(f)]
    for a in todo:
        roots = list(_roots(by_name[a.dataset]).values())
        for f in _folders_written(a, by_name[a.dataset]):
            folders[f] = next((r for r in roots if f == r or r in f.parents), f)
    try:
        for folder, root in folders.items():
            _probe(folder, root)
    except NotWritableError:
        for f in created:                  # the empty .dataguard/ we just made: refused means untouched
            with contextlib.suppress(OSError):
                f.rmdir()
        raise


def _folders_written(a: Action, ds: Dataset) -> list[Path]:
    """The existing folders an action moves files out of or into (its target's, its files', gt)."""
    roots = _roots(ds)
    out = []
    for t in [a.target, *a.files]:
        part, rel = _split(t)
        if part in roots:
            out.append(_existing(roots[part], (roots[part] / rel).parent))
    if a.kind == ActionKind.REPREPROCESS and "preprocessed" in roots and (roots["preprocessed"] / "gt_segmentations").is_dir():
        out.append(roots["preprocessed"] / "gt_segmentations")
    return out


def _existing(root: Path, folder: Path) -> Path:
    """folder, or its nearest existing parent inside root (where the first mkdir would go)."""
    while folder != root and not folder.is_dir() and root in folder.parents:
        folder = folder.parent
    return folder


def _probe(folder: Path, root: Path) -> None:
    """Create and remove a tiny file: the one test read-only mounts, ACLs and root all answer
    truly. Only in a real folder inside the dataset: a linked folder on the way is refused."""
    probe = folder / f".dataguard-probe-{os.urandom(6).hex()}.tmp"
    try:
        if folder != root:
            rel = folder.relative_to(root).as_posix()
            check_parents(root, rel + "/probe")
            if rel == DG_DIR:
                makedirs_inside(root, DG_DIR)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600))
        os.unlink(probe)
    except OutsideError as e:
        raise UnsafeState(f"cannot repair: {e.filename}: {e.strerror}; nothing was changed") from None
    except (OSError, ValueError) as e:
        raise NotWritableError(f"cannot repair: {folder}: {e.strerror or e}; nothing was changed") from None


def _stage_remotely(todo: list[Action], by_name: dict, run_id: str, executor) -> dict:
    """Submit every case rebuild at once; {id(action): future of its staged files}."""
    out = {}
    for a in todo:
        if a.kind == ActionKind.REPREPROCESS:
            out[id(a)] = _submit_rebuild(a, by_name[a.dataset], run_id, executor)
    return out
