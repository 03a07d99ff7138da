"""The one way dataguard reads small files, writes files and moves them.

Every writer (manifests, the stat index, splits, journals, quarantine, the submission
archive and its manifest, checkpoint copies) goes through here, so the guarantees hold
everywhere at once:

- reads of small files never block and never swallow a huge one (`read_regular`, `read_json`);
- a write is a temp file in the target's folder, fsync'ed, renamed over the target, and the
  folder fsync'ed where the OS allows (`atomic_write_bytes`, `commit`): a crash leaves the old
  file or the new one, never a torn one; a rewrite keeps the old file's mode;
- a move across file systems copies, fsyncs, proves the copy byte-identical by blake3 and only
  then unlinks the source (`move_durably`): bytes are never lost in flight.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

CHUNK = 1 << 20                   # bytes read at a time when hashing
SMALL_FILE_LIMIT = 256 << 20      # dataset.json / plans / splits: MBs at most, never hundreds


# --- reading ------------------------------------------------------------------------------------
def open_nonblocking(path):
    """A binary reader that cannot block: a file swapped for a FIFO between the caller's
    stat and this open is opened without waiting for a writer (read then gives nothing)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    return os.fdopen(fd, "rb")


def read_regular(path, limit: int = SMALL_FILE_LIMIT) -> bytes:
    """The bytes of a small regular file; OSError for anything else (never blocks).

    A FIFO, socket, device or folder named like `dataset.json` would hang or flood a
    plain `read_text()`; this stats first, opens with O_NONBLOCK and checks again on the
    open descriptor, so a file swapped between the two cannot slip through. OSError's
    strerror says why ("not a regular file (a FIFO)", "larger than ... bytes").
    """
    def refuse(st) -> None:
        if not stat.S_ISREG(st.st_mode):
            what = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "special")
            raise OSError(errno.EINVAL, f"not a regular file ({what})", str(path))
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))

    refuse(os.stat(path))
    with open_nonblocking(path) as f:
        refuse(os.fstat(f.fileno()))
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    return data


def read_json(path, limit: int = SMALL_FILE_LIMIT):
    """Parsed JSON of a small regular file. OSError / ValueError (incl. UnicodeDecodeError and
    nesting too deep for the parser) say why not."""
    data = read_regular(path, limit)
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply to load") from None


def hash_stream(f) -> str:
    """blake3 of what is left in a binary stream."""
    from blake3 import blake3

    h = blake3()
    while True:
        buf = f.read(CHUNK)
        if not buf:
            return h.hexdigest()
        h.update(buf)


def blake3_file(path) -> str:
    """blake3 of a whole file: what the manifest, journal, checkpoints and submissions record."""
    with open(path, "rb") as f:
        return hash_stream(f)


# --- writing ------------------------------------------------------------------------------------
def fsync_dir(folder) -> None:
    """Make a rename in `folder` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path) -> Path:
    """A fresh temp name in `path`'s folder: `.{name}.{12 hex}.tmp` (what the sweeps look for)."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"


def commit(tmp, path) -> None:
    """fsync `tmp`, rename it over `path`, fsync the folder: the last step of every write."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync it, rename it over the target.

    The result keeps the mode of the file it replaces, and a new file gets the umask's: a
    rewrite must not make a shared 644 file private to whoever rewrote it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = None
    # O_EXCL with a random name is what tempfile.mkstemp does, without its 7 ms of imports
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None and hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            elif mode is not None:                # Windows before 3.13: no fchmod
                os.chmod(tmp, mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# --- copying and moving ----------------------------------------------------------------------------
class CopyMismatch(OSError):
    """A copy's bytes differ from its source's: the copy is dropped, the source stays."""


def copy_verified(src, dst) -> str:
    """Copy `src` to `dst` (temp, fsync, rename) and prove it byte-identical; its blake3."""
    src, dst = Path(src), Path(dst)
    tmp = temp_path(dst)
    try:
        shutil.copy2(src, tmp)
        want, got = blake3_file(src), blake3_file(tmp)
        if want != got:
            raise CopyMismatch(errno.EIO, f"copy of {src} differs from the original "
                                          f"(blake3 {got[:16]} != {want[:16]}); the original is untouched")
        commit(tmp, dst)
        return want
    finally:
        if tmp.exists():
            tmp.unlink()


def move_durably(src, dst) -> None:
    """Rename when possible (same file system: atomic); across file systems copy, fsync,
    verify the copy's blake3 against the source's, and only then unlink the source."""
    src, dst = Path(src), Path(dst)
    try:
        os.replace(src, dst)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    copy_verified(src, dst)
    os.unlink(src)
    fsync_dir(src.parent)


def human_size(n: float | None) -> str:
    """A byte count as people read it, in binary units: "512 B", "1.5 GB"; "?" when unknown.
    One formatter for the train gate, `doctor` and its face."""
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
