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

from .errors import OutsideError
from .findings import display

CHUNK = 1 << 20                   # bytes read at a time when hashing
SMALL_FILE_LIMIT = 256 << 20      # dataset.json / plans / splits: MBs at most, never hundreds


# --- reading ------------------------------------------------------------------------------------
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | NOFOLLOW


def what_is(mode: int) -> str:
    """A file type in words, for messages: "a symbolic link", "a FIFO", ..."""
    return ("a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
            else "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a regular file" if stat.S_ISREG(mode) else "special")


def open_nonblocking(path, follow_links: bool = False):
    """A binary reader of a regular file that cannot block and follows no link.

    O_NOFOLLOW refuses a symbolic link in the last place (ELOOP), O_NONBLOCK opens a FIFO
    swapped in between the caller's lstat and this open without waiting for a writer, and
    the open descriptor is fstat'ed: anything but a regular file is refused (OSError EINVAL,
    "not a regular file (a FIFO)"), so a swap between check and use cannot slip through.
    """
    try:
        fd = os.open(path, READ_FLAGS & ~NOFOLLOW if follow_links else READ_FLAGS)
    except OSError as e:
        if e.errno == errno.ELOOP or (e.errno == errno.EMLINK and NOFOLLOW):
            raise OSError(errno.ELOOP, "a symbolic link: not followed", str(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file ({what_is(st.st_mode)})", str(path))
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")



def read_regular(path, limit: int = SMALL_FILE_LIMIT) -> bytes:
    """The bytes of a small regular file; OSError for anything else (never blocks).

    A FIFO, socket, device, folder or link named like `dataset.json` would hang, flood or
    leave the dataset through a plain `read_text()`; this lstats first, opens with O_NONBLOCK and checks again on the
    open descriptor, so a file swapped between the two cannot slip through. OSError's
    strerror says why ("not a regular file (a FIFO)", "larger than ... bytes").
    """
    def refuse(st) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file ({what_is(st.st_mode)})", str(path))
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))

    refuse(os.lstat(path))
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


def blake3_file(path, follow_links: bool = False) -> str:
    """blake3 of a whole regular file (never through a link, never a FIFO): what the manifest,
    journal, checkpoints and submissions record."""
    with open_nonblocking(path, follow_links) as f:
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


# --- paths inside a dataset ------------------------------------------------------------------------
def check_rel(rel: str) -> str:
    """`rel` when it is a relative, normalised POSIX path that stays inside its root; else
    OutsideError. Journals and plans hold such paths: `..`, `.`, empty parts, an absolute
    path or a drive never name a place inside the dataset."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise OutsideError(errno.EINVAL, "not a path", repr(rel))
    parts = rel.split("/")
    if (rel.startswith("/") or any(p in ("", ".", "..") for p in parts)
            or (os.sep != "/" and ("\\" in rel or ":" in parts[0]))):
        raise OutsideError(errno.EINVAL, "not a relative, normalised path inside the dataset", rel)
    return rel


def check_parents(root, rel: str) -> None:
    """Every existing folder between `root` and `root/rel` is a real folder, not a link:
    a move into or out of `rel` then stays inside `root`. The last part itself is not
    looked at (it may be the link that is being quarantined)."""
    check_rel(rel)
    here = os.fspath(root)
    for part in rel.split("/")[:-1]:
        here = os.path.join(here, part)
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return                         # the rest does not exist yet: makedirs creates folders
        if not stat.S_ISDIR(st.st_mode):
            raise OutsideError(errno.ELOOP, f"{part!r} on the way is {what_is(st.st_mode)}, not a folder",
                               here)


def makedirs_inside(root, rel_folder: str) -> Path:
    """Create root/rel_folder folder by folder, never through a link (each part is lstat'ed
    after mkdir); the folder's path."""
    here = Path(root)
    if rel_folder in ("", "."):
        return here
    for part in check_rel(rel_folder).split("/"):
        here = here / part
        try:
            os.mkdir(here, 0o777)
        except FileExistsError:
            pass
        st = os.lstat(here)
        if not stat.S_ISDIR(st.st_mode):
            raise OutsideError(errno.ELOOP, f"{here} is {what_is(st.st_mode)}, not a folder", str(here))
    return here


def resolve_display(root, shown: str) -> str:
    """The real relative path (OS bytes as surrogate-escaped str) of a path shown escaped
    (`findings.display`): names with newlines or non-UTF-8 bytes are found by listing each
    folder, never by using the escaped text as a path. OSError when none or several match."""
    check_rel(shown)
    real: list[str] = []
    here = os.fspath(root)
    for part in shown.split("/"):
        if os.path.lexists(os.path.join(here, part)):
            name = part
        else:
            with os.scandir(here) as it:
                hits = [e.name for e in it if display(e.name) == part]
            if len(hits) != 1:
                raise OSError(errno.ENOENT if not hits else errno.EEXIST,
                              "no such file" if not hits else "several files show as this name", shown)
            name = hits[0]
        real.append(name)
        here = os.path.join(here, name)
    return "/".join(real)


def move_entry(src, dst) -> None:
    """Rename a link, FIFO, socket or device itself (never copied: a copy would follow it);
    a move across file systems is refused (EXDEV), the entry stays where it was."""
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


def create_secret(path, data: bytes) -> None:
    """Write a new private file (mode 600) whole or not at all, never over an existing one
    (a concurrent creator wins; FileExistsError is not raised: the caller reads what is there)."""
    path = Path(path)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)            # atomic, and never over a file another process just made
        except FileExistsError:
            pass
        except OSError:                   # a file system without hard links
            if not os.path.lexists(path):
                os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def read_open(f, limit: int, size: int | None = None) -> bytes:
    """The bytes left in an already opened binary stream (the descriptor a caller checked and
    hashed), at most `limit` of them: OSError EFBIG ("larger than ... bytes", as `read_regular`)
    beyond, after reading no more than limit + 1, so a sparse file that claims gigabytes costs
    nothing. `size`: what fstat said, to refuse before reading at all."""
    if size is not None and size > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes")
    data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes")
    return bytes(data)
