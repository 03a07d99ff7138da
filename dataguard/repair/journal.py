"""Quarantine and the write-ahead journal that makes every repair undoable.

Nothing is deleted: a file that must go is *moved* into
`<dataset>/.dataguard/quarantine/<run-id>/<same relative path>`, with its blake3
recorded. Every step is appended (and fsync'ed) to
`<dataset>/.dataguard/journal/<run-id>.jsonl` *before* it happens, so after a crash
at any point `restore` knows exactly what to put back.
"""
from __future__ import annotations

import json
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..fsio import blake3_file, move_durably  # noqa: F401 - apply/restore import them from here

DG_DIR = ".dataguard"


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
        _crash_point()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entry.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%S"))
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def quarantine_file(self, rel: str, reason: str) -> str:
        """Move root/rel into the quarantine (journalled first). Returns the quarantine rel path."""
        src = self.root / rel
        dst = self.quarantine / rel
        digest = blake3_file(src)
        qrel = dst.relative_to(self.root).as_posix()
        self.write(op="quarantine", path=rel, to=qrel, blake3=digest, reason=reason)
        self.steps.append({"op": "quarantine", "path": rel, "to": qrel, "blake3": digest})
        dst.parent.mkdir(parents=True, exist_ok=True)
        _move(src, dst)
        self.write(op="quarantined", path=rel)
        return qrel

    def place_file(self, staged: Path, rel: str) -> None:
        """Move a verified staged file to root/rel (journalled first)."""
        digest = blake3_file(staged)
        self.write(op="place", path=rel, blake3=digest)
        self.steps.append({"op": "place", "path": rel, "staged": str(staged), "blake3": digest})
        dst = self.root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
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
        if dst.is_file() and not dst.is_symlink() and blake3_file(dst) == step["blake3"]:
            staged = Path(step["staged"])
            self.write(op="unplace", path=step["path"], to=str(staged))
            staged.parent.mkdir(parents=True, exist_ok=True)
            move_durably(dst, staged)
        self.write(op="unplaced", path=step["path"])

    def _unquarantine(self, step: dict) -> bool:
        """Quarantined file back in place, verified; True when it moved."""
        src, dst = self.root / step["to"], self.root / step["path"]
        in_place = dst.is_file() and blake3_file(dst) == step["blake3"]
        if in_place and src.exists():
            return False                  # only the copy half of a cross-device move happened
        if in_place:
            self.write(op="unquarantined", path=step["path"])   # the move never happened
            return False
        if not src.is_file():
            raise RollbackProblem(f"quarantined copy {step['to']} is missing")
        if blake3_file(src) != step["blake3"]:
            raise RollbackProblem(f"quarantined copy {step['to']} changed; left there")
        if dst.exists() or dst.is_symlink():
            raise RollbackProblem("another file is in its place; the original stays in quarantine")
        self.write(op="unquarantine", path=step["path"], **{"from": step["to"]}, blake3=step["blake3"])
        dst.parent.mkdir(parents=True, exist_ok=True)
        _move(src, dst)
        if blake3_file(dst) != step["blake3"]:
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


_move = move_durably        # the one move that never loses bytes (fsio)


def read_journal(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                break          # a torn last line from a crash: everything before it is valid
    return out


def journals(root: Path) -> list[Path]:
    d = Path(root) / DG_DIR / "journal"
    return sorted(d.glob("*.jsonl")) if d.is_dir() else []
