"""One repair per dataset at a time: an OS file lock that dies with its process.

An OS lock (flock on POSIX, msvcrt.locking on Windows) is released by the kernel
when the holder is killed, so a SIGKILLed repair never leaves a stale lock behind.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import UnsafeState
from ..errors import LockedError  # noqa: F401 - defined in errors
from ..fsio import NOFOLLOW, makedirs_inside


class DatasetLock:
    def __init__(self, folder: Path):
        self.path = Path(folder) / ".dataguard" / "repair.lock"
        self._f = None

    def __enter__(self) -> "DatasetLock":
        makedirs_inside(self.path.parent.parent, ".dataguard")
        try:       # never through a link: a planted repair.lock -> elsewhere would be truncated
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
                         | getattr(os, "O_BINARY", 0), 0o666)
        except OSError as e:
            raise UnsafeState(f"{self.path}: {e.strerror or e} (a link or a special file?); "
                              "nothing was changed") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafeState(f"{self.path} is not a regular file; nothing was changed")
        f = os.fdopen(fd, "r+b")
        try:
            _lock(f)
        except OSError:
            f.seek(0)
            holder = f.read().decode("utf-8", "replace").strip() or "unknown process"
            f.close()
            raise LockedError(f"another dataguard repair is running on {self.path.parent.parent} ({holder})") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}".encode())
        f.flush()
        self._f = f
        return self

    def __exit__(self, *exc) -> None:
        if self._f is not None:
            _unlock(self._f)
            self._f.close()
            self._f = None


def _lock(f) -> None:
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        import msvcrt

        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock(f) -> None:
    if os.name == "nt":  # pragma: no cover
        import msvcrt

        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
