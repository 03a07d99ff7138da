"""The manifest: one JSON file per dataset with every file's blake3 and check results.

Keyed like dvc's state cache on (size, mtime_ns, inode): a file whose stat is unchanged
is not read again and its recorded findings are reused. Results are recorded per check
with the check's version (from the registry), so changing one check re-runs only that
check on the files it covers; a per-file context key (labels, kind) invalidates results
when dataset.json changes. Dataset-level checks are recorded too, with a signature of
everything they read (`dataset_checks`), so an unchanged dataset skips them.

Written atomically (temp file, fsync, rename), and only when something changed: a
rescan that finds everything as recorded leaves the file alone, so `updated` is the
time of the last change. JSON goes through orjson when it is installed (a dependency;
the standard library's json is the fallback), with the cyclic garbage collector paused
while the ~1M small objects of a 30,000-file manifest are built.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..checks.base import FileResult, FileTask
from ..errors import ManifestError  # noqa: F401 - defined in errors
from ..findings import Finding
from ..fsio import atomic_write_bytes, atomic_write_text  # noqa: F401 - re-exported

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency; json keeps it working without
    _orjson = None

SCHEMA = "dataguard-manifest/2"
OLD_SCHEMAS = ("dataguard-manifest/1",)   # 0.1.0: results not keyed per check; re-read once
DEFAULT_DIR = None    # this user's state folder, one folder per dataset (engine.manifest_home)
READ = "read"    # pseudo-check: the file could not be read at all (never reused)
GATES = ("junk", "empty")   # findings of these stop the checks after them (registry: gate=True)


def json_loads(data: bytes):
    """Parse JSON bytes (orjson when available). ValueError when it is not JSON."""
    if _orjson is not None:
        return _orjson.loads(data)
    import json

    return json.loads(data)


def json_dumps(obj) -> bytes:
    """Compact JSON bytes. Non-string keys become strings, as json.dumps does."""
    if _orjson is not None:
        try:
            return _orjson.dumps(obj, option=_orjson.OPT_NON_STR_KEYS)
        except TypeError:      # e.g. an integer beyond 64 bits in some fact: json copes
            pass
    import json

    # compact: indent would force json's pure-Python encoder (10x slower on big manifests)
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def json_canonical(obj) -> bytes:
    """Deterministic JSON bytes of plain data (keys sorted at every level), for signatures.
    (orjson and json spell some floats differently: switching between them only costs one
    re-run of the dataset checks.)"""
    try:
        if _orjson is not None:
            return _orjson.dumps(obj, option=_orjson.OPT_SORT_KEYS | _orjson.OPT_NON_STR_KEYS)
        import json

        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError):     # not plain data: its repr is deterministic enough
        return repr(obj).encode("utf-8", "backslashreplace")


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic GC while many small acyclic objects are made (a manifest load, the
    planning loop): each pass would walk them all again (30,000 files: load 0.54 s -> 0.17 s).

    On the way out what was made is moved to the permanent generation (gc.freeze), so the
    first collection after re-enabling does not walk it either (another 0.2-0.4 s); the
    scan gives it back with `gc_release()` when it ends. Refcounting frees everything as
    usual meanwhile. Does nothing to a process that disabled the GC or froze objects itself.
    """
    if not gc.isenabled() or (gc.get_freeze_count() and not _FROZEN_BY_US[0]):
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        _FROZEN_BY_US[0] = True
        gc.enable()


_FROZEN_BY_US = [False]


def gc_release() -> None:
    """Undo gc_paused's freeze (the objects join the oldest generation; no pass now)."""
    if _FROZEN_BY_US[0]:
        _FROZEN_BY_US[0] = False
        gc.unfreeze()


@dataclass
class Manifest:
    dataset: str
    path: Path
    roots: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict] = field(default_factory=dict)
    snapshots: dict[str, dict] = field(default_factory=dict)
    dataset_checks: dict[str, dict] = field(default_factory=dict)   # name -> {v, sig, findings}
    exists: bool = False
    dirty: bool = False            # something differs from the file on disk: save() writes
    files_sorted: bool = True      # `files` is in key order (as loaded, no key added since)

    @classmethod
    def load(cls, manifest_dir: Path, dataset: str) -> "Manifest":
        path = Path(manifest_dir) / f"{dataset}.json"
        m = cls(dataset=dataset, path=path)
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):    # no manifest yet (or a file where its folder would be)
            m.dirty = True
            return m
        except OSError as e:
            raise ManifestError(f"manifest {path} is unreadable ({e}); move it away or use --manifest-dir") from None
        try:
            with gc_paused():
                data = json_loads(raw)
        except (ValueError, RecursionError) as e:
            raise ManifestError(f"manifest {path} is unreadable ({e}); move it away or use --manifest-dir") from None
        if isinstance(data, dict) and data.get("schema") in OLD_SCHEMAS:
            m.exists = m.dirty = True    # written by an older dataguard: every file is read again once
            return m
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ManifestError(f"{path} is not a dataguard manifest ({SCHEMA})")
        m.roots = data.get("roots", {})
        m.files = data.get("files", {})
        m.files_sorted = all(a < b for a, b in zip(m.files, itertools.islice(m.files, 1, None)))
        m.snapshots = data.get("snapshots", {})
        m.dataset_checks = data.get("dataset_checks", {})
        m.exists = True
        return m

    def set_roots(self, roots: dict[str, str]) -> None:
        if roots != self.roots:
            self.roots = roots
            self.dirty = True

    def plan(self, task: FileTask, st: os.stat_result | None, needed: tuple[str, ...],
             versions: dict[str, int], full: bool = False, hash_all: bool = False,
             context: str | None = None):
        """Decide what reading this file needs: `(reused FileResult, None)` or `(None, task to run)`.

        Checks recorded at their current version for an unchanged stat are reused; only
        the missing ones run. A file whose stat changed but all of whose needed results
        are recorded is only hashed (`known_blake3`): same bytes, same results. A file no
        needed check covers is not read at all (unless every file must be hashed), even
        with `full`. context: `task.context_key()`, when the caller has it already.

        Runs once per file on every scan (30,000 files: ~0.1 s), hence the plain loops.
        """
        e = self.files.get(task.rel)
        if st is not None and not needed and not hash_all and (full or e is None):
            return FileResult(rel=task.rel, size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino), None
        if full or st is None or e is None or e.get("context") != (context or task.context_key()):
            return None, dataclasses.replace(task, checks=needed)
        checks = e.get("checks") or {}
        by_check: dict[str, list[Finding]] = {}     # recorded at the current version
        gated = False
        for n, r in checks.items():
            if versions.get(n) == r.get("v"):
                fs = r.get("findings")
                if fs:
                    by_check[n] = [Finding.from_dict(f) for f in fs]
                    gated = gated or n in GATES
                else:
                    by_check[n] = []
        missing: tuple[str, ...] = ()
        for n in needed:
            if n not in by_check:
                missing += (n,)
        blake3 = e.get("blake3")
        if (blake3 is not None and e.get("size") == st.st_size and e.get("mtime_ns") == st.st_mtime_ns
                and e.get("inode") == st.st_ino):
            if not missing or gated:
                # facts: the manifest's own dict, not a copy (30,000 fewer dicts); read-only
                return FileResult(rel=task.rel, size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino,
                                  blake3=blake3, by_check=by_check, facts=e.get("facts") or {}), None
            return None, dataclasses.replace(task, checks=missing)
        if not needed and not hash_all:
            return FileResult(rel=task.rel, size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino), None
        return None, dataclasses.replace(task, checks=needed, known_blake3=None if missing else blake3)

    @staticmethod
    def _result(rel: str, e: dict, checks: dict, versions: dict[str, int]) -> FileResult:
        """The recorded result: every check recorded at its current version."""
        by_check = {}
        for n, r in checks.items():
            if versions.get(n) == r.get("v"):
                fs = r.get("findings")
                by_check[n] = [Finding.from_dict(f) for f in fs] if fs else []
        facts = e.get("facts")
        return FileResult(rel=rel, size=e["size"], mtime_ns=e["mtime_ns"], inode=e["inode"],
                          blake3=e.get("blake3"), by_check=by_check, facts=dict(facts) if facts else {})

    def merge(self, task: FileTask, fresh: FileResult, versions: dict[str, int]) -> FileResult:
        """The full result for a file after running some checks: fresh ones plus still-valid recorded ones."""
        e = self.files.get(task.rel)
        if e is None or e.get("context") != task.context_key() or (
                e.get("blake3") != fresh.blake3 and not fresh.same_content):
            return fresh
        old = self._result(task.rel, e, e.get("checks") or {}, versions)
        by_check = {**old.by_check, **fresh.by_check}
        return FileResult(rel=task.rel, size=fresh.size, mtime_ns=fresh.mtime_ns, inode=fresh.inode,
                          blake3=fresh.blake3 or old.blake3, by_check=by_check, facts={**old.facts, **fresh.facts})

    def record(self, task: FileTask, res: FileResult, versions: dict[str, int]) -> None:
        entry = {
            "size": res.size, "mtime_ns": res.mtime_ns, "inode": res.inode, "blake3": res.blake3,
            "context": task.context_key(),
            "checks": {n: {"v": versions.get(n, 0), "findings": [f.to_dict() for f in fs]}
                       for n, fs in res.by_check.items() if n != READ},
            "facts": res.facts,
        }
        old = self.files.get(task.rel)
        if old != entry:
            if old is None:
                self.files_sorted = False
            self.files[task.rel] = entry
            self.dirty = True

    def forget(self, rel: str) -> None:
        """Drop a file that is gone."""
        if self.files.pop(rel, None) is not None:
            self.dirty = True

    def dataset_findings(self, name: str, version: int, sig: str) -> list[Finding] | None:
        """The recorded findings of a dataset check whose inputs had signature `sig`, else None."""
        r = self.dataset_checks.get(name)
        if not isinstance(r, dict) or r.get("v") != version or r.get("sig") != sig:
            return None
        try:
            return [Finding.from_dict(f) for f in r.get("findings", [])]
        except (KeyError, TypeError, ValueError):
            return None

    def record_dataset_check(self, name: str, version: int, sig: str, findings: list[Finding]) -> None:
        entry = {"v": version, "sig": sig, "findings": [f.to_dict() for f in findings]}
        if self.dataset_checks.get(name) != entry:
            self.dataset_checks[name] = entry
            self.dirty = True

    def save(self, force: bool = False) -> bool:
        """Write the manifest if anything changed (or `force`). True when it was written."""
        if not (self.dirty or force):
            return False
        from datetime import datetime, timezone

        data = {
            "schema": SCHEMA,
            "dataset": self.dataset,
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "roots": self.roots,
            "files": self.files if self.files_sorted else dict(sorted(self.files.items())),
            "snapshots": dict(sorted(self.snapshots.items())),
            "dataset_checks": dict(sorted(self.dataset_checks.items())),
        }
        atomic_write_bytes(self.path, json_dumps(data))
        self.exists, self.dirty = True, False
        if not self.files_sorted:
            self.files, self.files_sorted = data["files"], True
        return True
