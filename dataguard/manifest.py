"""The manifest: one JSON file per dataset with every file's blake3 and check results.

Keyed like dvc's state cache on (size, mtime_ns, inode): a file whose stat is unchanged
is not read again and its recorded findings are reused. A checker version and a
per-file context key (labels, kind) invalidate results when the checks or the
dataset.json change. Written atomically (temp file, fsync, rename).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .checks.base import FileResult, FileTask
from .findings import Finding

SCHEMA = "dataguard-manifest/1"
# bump when a per-file check changes what it reports: cached results are then re-checked
CHECKER_VERSION = 1
DEFAULT_DIR = Path("manifests")


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
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return m
        except (OSError, ValueError) as e:
            raise ManifestError(f"manifest {path} is unreadable ({e}); move it away or use --manifest-dir") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ManifestError(f"{path} is not a dataguard manifest ({SCHEMA})")
        m.roots = data.get("roots", {})
        m.files = data.get("files", {})
        m.snapshots = data.get("snapshots", {})
        m.exists = True
        return m

    def reusable(self, task: FileTask, st: os.stat_result) -> FileResult | None:
        """The recorded result for this file if its stat and context are unchanged."""
        e = self.files.get(task.rel)
        if (e is None or e.get("checker") != CHECKER_VERSION or e.get("context") != task.context_key()
                or e.get("size") != st.st_size or e.get("mtime_ns") != st.st_mtime_ns
                or e.get("inode") != st.st_ino or e.get("blake3") is None):
            return None
        return FileResult(rel=task.rel, size=e["size"], mtime_ns=e["mtime_ns"], inode=e["inode"],
                          blake3=e["blake3"], findings=[Finding.from_dict(f) for f in e.get("findings", [])],
                          facts=e.get("facts", {}))

    def known_hash(self, task: FileTask) -> str | None:
        """The recorded blake3 of this file when its recorded results would still apply."""
        e = self.files.get(task.rel)
        if e is None or e.get("checker") != CHECKER_VERSION or e.get("context") != task.context_key():
            return None
        return e.get("blake3")

    def recorded(self, task: FileTask, fresh: FileResult) -> FileResult:
        """Recorded findings and facts under the new stat of a file whose bytes are unchanged."""
        e = self.files[task.rel]
        return FileResult(rel=task.rel, size=fresh.size, mtime_ns=fresh.mtime_ns, inode=fresh.inode,
                          blake3=fresh.blake3, findings=[Finding.from_dict(f) for f in e.get("findings", [])],
                          facts=e.get("facts", {}))

    def record(self, task: FileTask, res: FileResult) -> None:
        self.files[task.rel] = {
            "size": res.size, "mtime_ns": res.mtime_ns, "inode": res.inode, "blake3": res.blake3,
            "checker": CHECKER_VERSION, "context": task.context_key(),
            "findings": [f.to_dict() for f in res.findings], "facts": res.facts,
        }

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


class ManifestError(Exception):
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
