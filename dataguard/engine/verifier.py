"""`dataguard verify`: re-hash every file and compare with the recorded manifest.

Finds silent corruption (content changed while size and mtime did not), files that
disappeared, and files that appeared. Reads every byte, reuses nothing, and never
updates the manifest: it is the reference being checked against.
"""
from __future__ import annotations

import dataclasses
import os
import stat
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..checks.base import FileResult, FileTask
from ..errors import Cancelled
from ..findings import Fix, finding
from ..fsio import hash_stream, open_nonblocking
from .layout import Dataset, discover
from .manifest import DEFAULT_DIR, Manifest, ManifestError
from .manifest_home import dir_for
from .scanner import ProgressFn, ScanResult, ScanStats, filter_findings, run_file_checks
from .walk import list_files

if TYPE_CHECKING:
    from concurrent.futures import Executor


def hash_file(task: FileTask) -> FileResult:
    """blake3 of one file (executor worker). A FIFO or device is never opened for reading."""
    res = FileResult(rel=task.rel)
    try:
        st = os.stat(task.path)
        if not stat.S_ISREG(st.st_mode):
            res.facts["error"] = "not a regular file"
            return res
        with open_nonblocking(task.path) as f:
            st = os.fstat(f.fileno())
            res.size, res.mtime_ns, res.inode = st.st_size, st.st_mtime_ns, st.st_ino
            res.blake3 = hash_stream(f)
    except FileNotFoundError:
        res.vanished = True
    except OSError as e:
        res.facts["error"] = f"{type(e).__name__}: {e.strerror or e}"
    return res


def hash_batch(tasks: list[FileTask]) -> list[FileResult]:
    return [hash_file(t) for t in tasks]


def verify(targets: list[str] | None = None, *, datasets: list[Dataset] | None = None,
           manifest_dir: Path | str | None = DEFAULT_DIR, jobs: int | None = None,
           select: list[str] | None = None, ignore: list[str] | None = None,
           on_progress: ProgressFn | None = None, executor: Executor | None = None,
           cancel: threading.Event | None = None) -> ScanResult:
    t0 = time.perf_counter()
    dsets = datasets if datasets is not None else discover(targets)
    findings = []
    stats = ScanStats()
    for ds in dsets:
        start = len(findings)
        home = dir_for(manifest_dir, ds)
        man = Manifest.load(home, ds.name)
        if not man.exists:
            raise ManifestError(f"no manifest for {ds.name} in {home}:\n  run `dataguard scan` first")
        tasks = list_files(ds).tasks
        sizes = []
        for t in tasks:
            try:
                sizes.append(os.stat(t.path).st_size)
            except OSError:
                sizes.append(0)
        results = dict(zip((t.rel for t in tasks),
                           run_file_checks(tasks, sizes, jobs=jobs, executor=executor, on_progress=on_progress,
                                           cancel=cancel, worker=hash_batch)))
        if any(r is None for r in results.values()):
            raise Cancelled("verify cancelled")
        stats.files += len(tasks)
        stats.checked += len(tasks)
        stats.bytes_checked += sum(sizes)
        for t in tasks:
            r = results[t.rel]
            fix = Fix.REPREPROCESS if t.where == "config" else None
            rec = man.files.get(t.rel)
            if r.vanished:
                continue
            if rec is None:
                findings.append(finding("DG703", t.rel, "new file since the manifest was recorded", case=t.case))
            elif r.blake3 is None:
                findings.append(finding("DG701", t.rel, f"cannot be read to verify: {r.facts.get('error')}",
                                        case=t.case, fix=fix))
            elif r.blake3 != rec.get("blake3"):
                quiet = r.size == rec.get("size") and r.mtime_ns == rec.get("mtime_ns")
                how = ("silently: size and modification time are unchanged (bit rot or a tool "
                       "that restores timestamps)" if quiet else
                       f"(size {rec.get('size')} → {r.size} bytes)")
                findings.append(finding("DG701", t.rel, f"content changed since the manifest was recorded {how}",
                                        case=t.case, fix=fix))
        live = {t.rel for t in tasks if not results[t.rel].vanished}
        for rel in sorted(set(man.files) - live):
            fix = Fix.REPREPROCESS if rel.startswith("preprocessed/") and rel.count("/") == 2 else None
            findings.append(finding("DG702", rel, "file recorded in the manifest is gone", fix=fix))
        findings[start:] = [dataclasses.replace(f, dataset=ds.name) for f in findings[start:]]
    stats.seconds = time.perf_counter() - t0
    return ScanResult(datasets=dsets, findings=filter_findings(findings, select, ignore), stats=stats)
