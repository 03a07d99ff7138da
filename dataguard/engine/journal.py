"""Quarantine and the write-ahead journal that makes every repair undoable.

Nothing is deleted: a file that must go is *moved* into
`<dataset>/.dataguard/quarantine/<run-id>/<same relative path>`, with its blake3 recorded
(a symbolic link or a FIFO is moved itself, never followed: its target or its type is
recorded instead). Every step is appended (and fsync'ed) to
`<dataset>/.dataguard/journal/<run-id>.jsonl` *before* it happens, so after a crash at any
point `restore` knows exactly what to put back. Each record carries a sequence number and a
MAC with this user's key (`engine.own_state`): a journal planted in a dataset does not verify,
and nothing acts on it. Every path is relative, normalised and inside the dataset, and no move
goes through a linked folder (`fsio.check_parents`).
"""
from __future__ import annotations

import errno
import json
import os
import signal
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .own_state import DG_DIR, journal_paths, load_key, read_records, sign, verified_records
from ..fsio import (  # noqa: F401 - apply/restore import blake3_file and move_durably from here
    NOFOLLOW,
    blake3_file,
    check_parents,
    makedirs_inside,
    move_durably,
    move_entry,
    what_is,
)

def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _crash_point() -> None:
    """Test hook: DATAGUARD_CRASH_AT=N SIGKILLs this process at the N-th journal write."""
    n = os.environ.get("DATAGUARD_CRASH_AT")
    if n is None:
        return
    _crash_point.count = getattr(_crash_point, "count", 0) + 1
    if _crash_point.count == int(n):
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


@dataclass
class Journal:
    """Append-only JSON-lines log of one repair (or restore) run on one dataset part."""
    root: Path            # the dataset folder (raw or preprocessed) the paths are relative to
    run_id: str
    key: bytes | None = field(default=None, repr=False, compare=False)   # this user's journal key
    # the moves announced through this instance, oldest first: what `roll_back` undoes
    steps: list[dict] = field(default_factory=list, repr=False, compare=False)

    @property
    def path(self) -> Path:
        return self.root / DG_DIR / "journal" / f"{self.run_id}.jsonl"

    @property
    def quarantine(self) -> Path:
        return self.root / DG_DIR / "quarantine" / self.run_id

    @property
    def staging(self) -> Path:
        return self.root / DG_DIR / "tmp" / self.run_id

    def write(self, **entry) -> None:
        """Append one signed record, fsync'ed; the journal is opened without following a link."""
        _crash_point()
        makedirs_inside(self.root, f"{DG_DIR}/journal")
        if self.key is None:
            self.key = load_key(create=True)
        entry.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%S"))
        entry["seq"] = _next_seq(self.path)
        entry["mac"] = sign(self.key, self.run_id, entry)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW | getattr(os, "O_BINARY", 0),
                     0o666)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "journal is not a regular file", str(self.path))
            os.write(fd, (json.dumps(entry) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def quarantine_file(self, rel: str, reason: str) -> str:
        """Move root/rel into the quarantine (journalled first). Returns the quarantine rel path.
        A link or a special file is moved itself (rename), never opened or followed."""
        check_parents(self.root, rel)
        src = self.root / rel
        ident = identity(src)
        qrel = f"{DG_DIR}/quarantine/{self.run_id}/{rel}"
        check_parents(self.root, qrel)
        self.write(op="quarantine", path=rel, to=qrel, reason=reason, **ident)
        self.steps.append({"op": "quarantine", "path": rel, "to": qrel, **ident})
        makedirs_inside(self.root, qrel.rsplit("/", 1)[0])
        _move(src, self.root / qrel)
        self.write(op="quarantined", path=rel)
        return qrel

    def place_file(self, staged: Path, rel: str) -> None:
        """Move a verified staged file to root/rel (journalled first)."""
        check_parents(self.root, rel)
        digest = blake3_file(staged)
        self.write(op="place", path=rel, blake3=digest)
        self.steps.append({"op": "place", "path": rel, "staged": str(staged), "blake3": digest})
        dst = self.root / rel
        if "/" in rel:
            makedirs_inside(self.root, rel.rsplit("/", 1)[0])
        move_durably(staged, dst)
        self.write(op="placed", path=rel)

    def roll_back(self, reason: str) -> tuple[int, list[str]]:
        """Undo this instance's moves, newest first, so a half-done action leaves its case whole.

        What was placed goes back to its staging file (ours, never user data); what was
        quarantined comes back, verified by blake3 as `restore` does. Every move is journalled
        first (`unplace`/`unquarantine`) and confirmed after, so `restore` skips what was undone
        here. Returns (files put back, problems); a problem leaves that file where it is.
        """
        if not self.steps:
            return 0, []
        self.write(op="rollback", reason=reason)
        back, problems = 0, []
        for step in reversed(self.steps):
            try:
                if step["op"] == "place":
                    self._unplace(step)
                elif self._unquarantine(step):
                    back += 1
            except (OSError, RollbackProblem) as e:
                problems.append(f"{step['path']}: {e}")
        self.steps.clear()
        self.write(op="rolled-back", restored=back, problems=problems)
        return back, problems

    def _unplace(self, step: dict) -> None:
        """Placed file back to staging; a place that never happened is only marked undone, so
        `restore` cannot take the original (same bytes, put back later) for what the run wrote."""
        dst = self.root / step["path"]
        if matches(dst, step):
            staged = Path(step["staged"])
            self.write(op="unplace", path=step["path"], to=str(staged))
            staged.parent.mkdir(parents=True, exist_ok=True)
            move_durably(dst, staged)
        self.write(op="unplaced", path=step["path"])

    def _unquarantine(self, step: dict) -> bool:
        """Quarantined file back in place, verified; True when it moved."""
        src, dst = self.root / step["to"], self.root / step["path"]
        in_place = matches(dst, step)
        if in_place and os.path.lexists(src):
            return False                  # only the copy half of a cross-device move happened
        if in_place:
            self.write(op="unquarantined", path=step["path"])   # the move never happened
            return False
        if not os.path.lexists(src):
            raise RollbackProblem(f"quarantined copy {step['to']} is missing")
        if not matches(src, step):
            raise RollbackProblem(f"quarantined copy {step['to']} changed; left there")
        if os.path.lexists(dst):
            raise RollbackProblem("another file is in its place; the original stays in quarantine")
        check_parents(self.root, step["path"])
        self.write(op="unquarantine", path=step["path"], **{"from": step["to"]}, **_ident_of(step))
        if "/" in step["path"]:
            makedirs_inside(self.root, step["path"].rsplit("/", 1)[0])
        _move(src, dst)
        if not matches(dst, step):
            raise RollbackProblem("put back, but its bytes differ from the quarantined copy")
        self.write(op="unquarantined", path=step["path"])
        return True


class RollbackProblem(Exception):
    """One file a rollback could not put back safely (it stays where it is, nothing is lost)."""


# a confirmed rollback step cancels the newest earlier entry of this op for the same path
UNDONE_BY = {"unplaced": "place", "unquarantined": "quarantine"}


def without_rolled_back(entries: list[dict]) -> list[dict]:
    """A journal's entries less the moves the run itself undid (see `Journal.roll_back`)."""
    out: list[dict] = []
    for e in entries:
        cancels = UNDONE_BY.get(e.get("op"))
        if cancels is None:
            out.append(e)
            continue
        for i in range(len(out) - 1, -1, -1):
            if out[i].get("op") == cancels and out[i].get("path") == e.get("path"):
                del out[i]
                break
    return out


def identity(path: Path) -> dict:
    """What a journal records to recognise a file later: its blake3, or for a symbolic link
    where it points, or for a FIFO, socket or device its type (lstat and readlink only)."""
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        return {"blake3": blake3_file(path)}
    if stat.S_ISLNK(st.st_mode):
        return {"link": os.fsdecode(os.readlink(path))}
    if stat.S_ISDIR(st.st_mode):
        raise OSError(errno.EISDIR, "a folder: its files are quarantined one by one", str(path))
    return {"special": what_is(st.st_mode)}


def _ident_of(rec: dict) -> dict:
    return {k: rec[k] for k in ("blake3", "link", "special") if k in rec}


def matches(path: Path, rec: dict) -> bool:
    """True when `path` is (still) what `rec` recorded: same bytes, same link, same type."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if "link" in rec:
        return stat.S_ISLNK(st.st_mode) and os.fsdecode(os.readlink(path)) == rec["link"]
    if "special" in rec:
        return what_is(st.st_mode) == rec["special"]
    return stat.S_ISREG(st.st_mode) and rec.get("blake3") is not None and blake3_file(path) == rec["blake3"]


def _move(src: Path, dst: Path) -> None:
    """The one move that never loses bytes (fsio.move_durably) for a regular file; a link or a
    special file is renamed itself, and never copied (a copy would follow it)."""
    if stat.S_ISREG(os.lstat(src).st_mode):
        move_durably(src, dst)
        return
    move_entry(src, dst)


_NEXT_SEQ: dict[str, int] = {}


def _next_seq(path: Path) -> int:
    """The next sequence number of a journal (one writer at a time: the dataset lock)."""
    k = os.fspath(path)
    if k not in _NEXT_SEQ:
        try:
            _NEXT_SEQ[k] = 1 + max((r.get("seq", -1) for r in read_records(path)
                                    if isinstance(r.get("seq"), int)), default=-1)
        except FileNotFoundError:
            _NEXT_SEQ[k] = 0
    n = _NEXT_SEQ[k]
    _NEXT_SEQ[k] = n + 1
    return n


def read_journal(path: Path) -> list[dict]:
    """The records of a journal that this user's dataguard wrote (verified), in order; records
    that do not verify are left out (`engine.own_state.verified_records` names them)."""
    good, _ = verified_records(Path(path), load_key(create=False))
    return good


def journals(root: Path) -> list[Path]:
    """The journal files of a dataset folder (regular files only), never through a link."""
    return [p for p in journal_paths(root) if stat.S_ISREG(os.lstat(p).st_mode)]
