"""The manifest: one JSON file per dataset with every file's blake3 and check results.

Keyed like dvc's state cache on (size, mtime_ns, inode): a file whose stat is unchanged
is not read again and its recorded findings are reused. Results are recorded per check
with the check's version (from the registry), so changing one check re-runs only that
check on the files it covers; a per-file context key (labels, kind) invalidates results
when dataset.json changes. Written atomically (temp file, fsync, rename).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .checks.base import FileResult, FileTask
from .findings import Finding
from .errors import DataguardError

SCHEMA = "dataguard-manifest/2"
OLD_SCHEMAS = ("dataguard-manifest/1",)   # 0.1.0: results not keyed per check; re-read once
DEFAULT_DIR = Path("manifests")
READ = "read"    # pseudo-check: the file could not be read at all (never reused)


@dataclass
class Manifest:
    dataset: str
    path: Path
    roots: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict] = field(default_factory=dict)
    snapshots: dict[str, dict] = field(default_factory=dict)
    exists: bool = False

    @classmethod
    def load(cls, manifest_dir: Path, dataset: str) -> "Manifest":
        path = Path(manifest_dir) / f"{dataset}.json"
        m = cls(dataset=dataset, path=path)
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return m
        except (OSError, ValueError) as e:
            raise ManifestError(f"manifest {path} is unreadable ({e}); move it away or use --manifest-dir") from None
        if isinstance(data, dict) and data.get("schema") in OLD_SCHEMAS:
            m.exists = True          # written by an older dataguard: every file is read again once
            return m
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ManifestError(f"{path} is not a dataguard manifest ({SCHEMA})")
        m.roots = data.get("roots", {})
        m.files = data.get("files", {})
        m.snapshots = data.get("snapshots", {})
        m.exists = True
        return m

    def plan(self, task: FileTask, st: os.stat_result | None, needed: tuple[str, ...],
             versions: dict[str, int], full: bool = False, hash_all: bool = False):
        """Decide what reading this file needs: `(reused FileResult, None)` or `(None, task to run)`.

        Checks recorded at their current version for an unchanged stat are reused; only
        the missing ones run. A file whose stat changed but all of whose needed results
        are recorded is only hashed (`known_blake3`): same bytes, same results.
        """
        e = self.files.get(task.rel)
        if full or st is None or e is None or e.get("context") != task.context_key():
            return None, dataclasses.replace(task, checks=needed)
        recorded = {n: r for n, r in e.get("checks", {}).items() if versions.get(n) == r.get("v")}
        missing = tuple(n for n in needed if n not in recorded)
        same_stat = (e.get("size") == st.st_size and e.get("mtime_ns") == st.st_mtime_ns
                     and e.get("inode") == st.st_ino and e.get("blake3") is not None)
        if same_stat:
            gated = any(r.get("findings") for n, r in recorded.items() if n in ("junk", "empty"))
            if not missing or gated:
                return self._result(task, e, recorded, st), None
            return None, dataclasses.replace(task, checks=missing)
        if not needed and not hash_all:
            return FileResult(rel=task.rel, size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino), None
        known = e.get("blake3") if not missing else None
        return None, dataclasses.replace(task, checks=needed, known_blake3=known)

    def _result(self, task: FileTask, e: dict, recorded: dict, st=None) -> FileResult:
        return FileResult(
            rel=task.rel, size=e["size"] if st is None else st.st_size,
            mtime_ns=e["mtime_ns"] if st is None else st.st_mtime_ns,
            inode=e["inode"] if st is None else st.st_ino, blake3=e.get("blake3"),
            by_check={n: [Finding.from_dict(f) for f in r.get("findings", [])] for n, r in recorded.items()},
            facts=dict(e.get("facts", {})))

    def merge(self, task: FileTask, fresh: FileResult, versions: dict[str, int]) -> FileResult:
        """The full result for a file after running some checks: fresh ones plus still-valid recorded ones."""
        e = self.files.get(task.rel)
        if e is None or e.get("context") != task.context_key() or (
                e.get("blake3") != fresh.blake3 and not fresh.same_content):
            return fresh
        recorded = {n: r for n, r in e.get("checks", {}).items() if versions.get(n) == r.get("v")}
        old = self._result(task, e, recorded)
        by_check = {**old.by_check, **fresh.by_check}
        return FileResult(rel=task.rel, size=fresh.size, mtime_ns=fresh.mtime_ns, inode=fresh.inode,
                          blake3=fresh.blake3 or old.blake3, by_check=by_check, facts={**old.facts, **fresh.facts})

    def record(self, task: FileTask, res: FileResult, versions: dict[str, int]) -> None:
        self.files[task.rel] = {
            "size": res.size, "mtime_ns": res.mtime_ns, "inode": res.inode, "blake3": res.blake3,
            "context": task.context_key(),
            "checks": {n: {"v": versions.get(n, 0), "findings": [f.to_dict() for f in fs]}
                       for n, fs in res.by_check.items() if n != READ},
            "facts": res.facts,
        }

    def known_hash(self, rel: str) -> str | None:
        e = self.files.get(rel)
        return None if e is None else e.get("blake3")

    def save(self) -> None:
        data = {
            "schema": SCHEMA,
            "dataset": self.dataset,
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "roots": self.roots,
            "files": dict(sorted(self.files.items())),
            "snapshots": dict(sorted(self.snapshots.items())),
        }
        # compact: indent would force json's pure-Python encoder (10x slower on big manifests)
        atomic_write_text(self.path, json.dumps(data, separators=(",", ":")))


class ManifestError(DataguardError):
    """The manifest cannot be used (exit 2 with a one-line message)."""


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync it, rename it over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
