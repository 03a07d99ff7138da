"""Per-file checks: name → kind, then the cheapest test first.

Order per file: name (junk?) → 4-byte magic (AppleDouble?) → size (empty?) → blake3 of
all bytes → full structural verification by kind. `check_file` is the function the
process pool runs; it never raises for a bad file, it returns findings.
"""
from __future__ import annotations

import io
import os
import stat as statmod

from ..findings import Finding, Fix, Severity, finding
from ..fsio import blake3_file, hash_stream, open_nonblocking  # noqa: F401 - re-exported for the checks
from . import cascades
from .base import FileResult, FileTask
from .registry import FileInput, file_checks, get

APPLEDOUBLE_MAGIC = (b"\x00\x05\x16\x07", b"\x00\x05\x16\x00")  # AppleDouble, AppleSingle
OS_JUNK = {".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db", ".spotlight-v100", ".trashes"}
IN_MEMORY_LIMIT = 16 << 20   # smaller files are read once and checked from memory

# which code reports "cannot read this file at all", by kind
UNREADABLE_CODE = {"npz": "DG201", "npy": "DG201", "b2nd": "DG203", "pkl": "DG204", "image": "DG302", "label": "DG302"}


def is_os_junk(name: str) -> bool:
    return name.lower() in OS_JUNK


def config_file_kind(name: str) -> tuple[str, str | None]:
    """(kind, case id) of a file inside a preprocessed configuration folder."""
    if name.startswith("._"):
        return "appledouble", None
    if is_os_junk(name):
        return "osjunk", None
    for suffix, kind in (("_seg.b2nd", "b2nd"), (".b2nd", "b2nd"), ("_seg.npy", "npy"),
                         (".npy", "npy"), (".npz", "npz"), (".pkl", "pkl")):
        if name.endswith(suffix) and len(name) > len(suffix):
            return kind, name[: -len(suffix)]
    return "unexpected", None


def _preprocessed_fix(task: FileTask) -> Fix | None:
    return Fix.REPREPROCESS if task.where == "config" else None


def junk_findings(task: FileTask, head: bytes) -> list[Finding]:
    """DG101/DG102/DG104: files that are not data at all."""
    name = task.rel.rsplit("/", 1)[-1]
    if head[:4] in APPLEDOUBLE_MAGIC:
        return [finding("DG101", task.rel,
                        "macOS AppleDouble resource-fork file (magic 00 05 16 07); nnU-Net would take it for a case",
                        fix=Fix.QUARANTINE)]
    if task.kind == "appledouble" or name.startswith("._"):
        return [finding("DG101", task.rel,
                        "file named like a macOS resource fork ('._'); nnU-Net would take it for a case",
                        fix=Fix.QUARANTINE)]
    if task.kind == "osjunk":
        sev = Severity.ERROR if task.where == "config" else Severity.WARNING
        why = ("breaks nnU-Net's detection of the dataset file type" if task.where == "config"
               else "operating-system clutter")
        return [finding("DG102", task.rel, f"OS junk file '{name}': {why}", severity=sev, fix=Fix.QUARANTINE)]
    if task.kind == "unexpected":
        return [finding("DG104", task.rel, f"unexpected file '{name}' in a dataset folder", fix=Fix.QUARANTINE)]
    return []


def stray_folders(view) -> list[Finding]:
    """DG102 for each `__MACOSX` folder (macOS's zip leaves one beside the data it packed): one
    finding for the folder, which `cascades.fold` gives the DG101/DG102 of every file in it."""
    folders: dict[str, int] = {}
    for t in view.tasks:
        parts = t.rel.split("/")
        if "__MACOSX" in parts[:-1]:
            top = "/".join(parts[: parts.index("__MACOSX") + 1])
            folders[top] = folders.get(top, 0) + 1
    return [cascades.macosx_folder(rel, n) for rel, n in sorted(folders.items())]


class MemoryReader(io.RawIOBase):
    """A seekable reader over bytes already in memory that hands out large reads as
    zero-copy memoryviews (inflate and CRC take any buffer); small reads are bytes, as
    parsers such as zipfile expect. Saves copying every file once more (io.BytesIO)."""
    ZERO_COPY = 64 << 10

    def __init__(self, data: bytes):
        super().__init__()
        self._data, self._view, self._pos = data, memoryview(data), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = (0, self._pos, len(self._data))[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def read(self, n: int = -1):
        end = len(self._data) if n is None or n < 0 else min(len(self._data), self._pos + n)
        start, self._pos = self._pos, max(self._pos, end)
        if end - start >= self.ZERO_COPY:
            return self._view[start:end]
        return self._data[start:end]

    def readinto(self, b) -> int:
        chunk = self.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


def empty_findings(task: FileTask, size: int) -> list[Finding]:
    """DG103: a data file of 0 bytes (a copy that never finished, a full disk)."""
    if size == 0:
        return [finding("DG103", task.rel, "file is empty (0 bytes)", case=task.case, fix=_preprocessed_fix(task))]
    return []


def check_file(task: FileTask) -> FileResult:
    """Run the registered checks for this file's kind (or `task.checks`). Never raises.

    A check that raises becomes a DG001 finding for this file and the next check runs.
    """
    res = FileResult(rel=task.rel)
    try:
        st = os.stat(task.path)
    except FileNotFoundError:
        if os.path.islink(task.path):
            res.by_check["read"] = [_unreadable(task, f"symlink to a missing target ({os.readlink(task.path)})")]
        else:
            res.vanished = True
        return res
    except OSError as e:
        res.by_check["read"] = [_unreadable(task, e)]
        return res
    res.size, res.mtime_ns, res.inode = st.st_size, st.st_mtime_ns, st.st_ino
    if not statmod.S_ISREG(st.st_mode):
        what = "a folder" if statmod.S_ISDIR(st.st_mode) else "not a regular file (FIFO, device or socket)"
        res.by_check["read"] = [_unreadable(task, what)]
        return res
    checks = [get(n) for n in task.checks] if task.checks is not None else file_checks(task.kind)
    try:
        # a file swapped for a FIFO or a link between stat and open is refused by the open
        # itself (OSError "not a regular file", below): it never hangs the scan
        with open_nonblocking(task.path) as f:
            # bounded even when the file grew since its stat: a bigger one is streamed instead
            data = f.read(IN_MEMORY_LIMIT + 1) if st.st_size <= IN_MEMORY_LIMIT else None
            if data is not None and len(data) <= IN_MEMORY_LIMIT:
                from blake3 import blake3

                res.blake3 = blake3(data).hexdigest()
                src = MemoryReader(data)
            else:
                f.seek(0)
                data = None
                res.blake3 = hash_stream(f)
                f.seek(0)
                src = f
            if task.known_blake3 is not None and res.blake3 == task.known_blake3:
                res.same_content = True      # touched or copied, not changed: recorded results hold
                return res
            gated = False
            scratch: dict = {}
            for check in checks:
                if gated:
                    res.by_check[check.name] = []
                    continue
                src.seek(0)
                try:
                    found, facts = check.run(FileInput(task, src, data, st.st_size, scratch))
                except (OSError, MemoryError):
                    raise
                except Exception as e:  # noqa: BLE001 - any bug or odd input: DG001, go on
                    found, facts = [check_failed(task, check.name, e)], {}
                res.by_check[check.name] = list(found)
                res.facts.update(facts or {})
                gated = check.gate and bool(found)
    except FileNotFoundError:
        res.vanished = True
    except OSError as e:
        res.by_check = {"read": [_unreadable(task, e)]}
    except MemoryError:
        res.by_check = {"read": [_unreadable(task, "needs more memory than available to verify")]}
    return res


def check_batch(tasks: list[FileTask]) -> list[FileResult]:
    """Many small files in one executor call: one round trip instead of one per file."""
    return [check_file(t) for t in tasks]


def check_failed(task: FileTask, check: str, err: BaseException) -> Finding:
    """DG001: a check raised on this file; the message names the check and the exception."""
    return finding("DG001", task.rel, f"check '{check}' could not finish: {type(err).__name__}: {err}",
                   case=task.case)


def _unreadable(task: FileTask, err) -> Finding:
    msg = err if isinstance(err, str) else f"{type(err).__name__}: {getattr(err, 'strerror', None) or err}"
    code = UNREADABLE_CODE.get(task.kind)
    if task.kind == "json" and task.where in ("dataset", "raw"):
        # metadata nnU-Net needs: the preprocessed root's JSON files, the raw dataset.json
        code = "DG211" if task.where == "dataset" else ("DG301" if task.rel == "raw/dataset.json" else None)
    if code is None:
        return finding("DG104", task.rel, f"cannot read: {msg}")
    fix = _preprocessed_fix(task) if code not in ("DG302", "DG211", "DG301") else None
    return finding(code, task.rel, f"cannot read: {msg}", case=task.case, fix=fix)
