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
import shutil
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..checks.files import blake3_file  # noqa: F401 - apply/restore import it from here

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
        dst.parent.mkdir(parents=True, exist_ok=True)
        _move(src, dst)
        self.write(op="quarantined", path=rel)
        return qrel

    def place_file(self, staged: Path, rel: str) -> None:
        """Move a verified staged file to root/rel (journalled first)."""
        digest = blake3_file(staged)
        self.write(op="place", path=rel, blake3=digest)
        dst = self.root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, dst)
        self.write(op="placed", path=rel)


def _move(src: Path, dst: Path) -> None:
    """Rename when possible (same filesystem: atomic); copy+verify+unlink otherwise."""
    try:
        os.replace(src, dst)
    except OSError:
        tmp = dst.with_name(dst.name + ".partial")
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
        os.unlink(src)


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
