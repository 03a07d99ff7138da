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
from .base import CHUNK, FileTask, FileResult

APPLEDOUBLE_MAGIC = (b"\x00\x05\x16\x07", b"\x00\x05\x16\x00")  # AppleDouble, AppleSingle
OS_JUNK = {".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db", ".spotlight-v100", ".trashes"}
DATA_KINDS = {"npz", "npy", "b2nd", "pkl", "image", "label"}
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


def hash_stream(f) -> str:
    from blake3 import blake3

    h = blake3()
    while True:
        buf = f.read(CHUNK)
        if not buf:
            return h.hexdigest()
        h.update(buf)


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


def check_file(task: FileTask) -> FileResult:
    """Run every per-file check on one file. Never raises for a bad file."""
    res = FileResult(rel=task.rel)
    try:
        st = os.stat(task.path)
    except FileNotFoundError:
        res.vanished = True
        return res
    except OSError as e:
        res.findings = [_unreadable(task, e)]
        return res
    res.size, res.mtime_ns, res.inode = st.st_size, st.st_mtime_ns, st.st_ino
    if not statmod.S_ISREG(st.st_mode):
        res.findings = [_unreadable(task, "not a regular file")]
        return res
    try:
        with open(task.path, "rb") as f:
            if st.st_size <= IN_MEMORY_LIMIT:
                data = f.read()
                from blake3 import blake3

                res.blake3 = blake3(data).hexdigest()
                src = io.BytesIO(data)
            else:
                data = None
                res.blake3 = hash_stream(f)
                f.seek(0)
                src = f
            if task.known_blake3 is not None and res.blake3 == task.known_blake3:
                res.same_content = True      # touched or copied, not changed: skip the checks
                return res
            head = src.read(4)
            src.seek(0)
            res.findings = junk_findings(task, head)
            if res.findings:
                return res
            if st.st_size == 0 and task.kind in DATA_KINDS:
                res.findings = [finding("DG103", task.rel, "file is empty (0 bytes)", case=task.case,
                                        fix=_preprocessed_fix(task))]
                return res
            res.findings, res.facts = _by_kind(task, src, data, st.st_size)
    except FileNotFoundError:
        res.vanished = True
    except OSError as e:
        res.findings = [_unreadable(task, e)]
    except MemoryError:
        res.findings = [_unreadable(task, "needs more memory than available to verify")]
    return res


def _by_kind(task: FileTask, src, data: bytes | None, size: int):
    if task.kind == "npz":
        from .npz import check_npz

        return check_npz(task, src)
    if task.kind == "npy":
        from .npz import check_npy

        return check_npy(task, src, size)
    if task.kind == "b2nd":
        from .b2nd import check_b2nd

        return check_b2nd(task)
    if task.kind == "pkl":
        from .pickles import check_pkl

        return check_pkl(task, data if data is not None else src.read())
    if task.kind in ("image", "label"):
        from .raw import check_image

        return check_image(task, src)
    return [], {}


def _unreadable(task: FileTask, err) -> Finding:
    msg = err if isinstance(err, str) else f"{type(err).__name__}: {getattr(err, 'strerror', None) or err}"
    code = UNREADABLE_CODE.get(task.kind)
    if code is None:
        return finding("DG104", task.rel, f"cannot read: {msg}")
    fix = _preprocessed_fix(task) if code != "DG302" else None
    return finding(code, task.rel, f"cannot read: {msg}", case=task.case, fix=fix)
