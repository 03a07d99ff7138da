"""Where per-file checks run: this machine's pool (the default) or a Dask cluster.

`--executor dask://HOST:PORT` (or `DATAGUARD_EXECUTOR`) connects a `distributed.Client`
and hands the scanner `client.get_executor()`: a `concurrent.futures.Executor`, so the
scanner's seam (`run_file_checks(executor=...)`) is unchanged. The per-file check batches
are pure functions of their `FileTask`s, so Dask may rerun a batch on another worker when
one dies: nothing is lost or counted twice, because the client merges results by task.
The client keeps the manifest; workers only read files. Workers must see the same paths
(a shared file system): `check_mounts` runs a smoke task on every worker first.
"""
from __future__ import annotations

import os
from concurrent.futures import Executor
from pathlib import Path

from ..errors import UsageError

ENV = "DATAGUARD_EXECUTOR"
INSTALL = "pip install 'dataguard[dask]'  (installs dask and distributed)"


def is_dask_client(obj) -> bool:
    return type(obj).__name__ == "Client" and type(obj).__module__.startswith("distributed")


def on_cluster(executor) -> bool:
    """A Dask client's executor (work leaves this process: batch more, tag worker errors)."""
    return executor is not None and type(executor).__module__.startswith("distributed")


def as_executor(obj) -> Executor | None:
    """A Workspace's `executor=`: None, any Executor, or a `distributed.Client`."""
    if obj is None or not is_dask_client(obj):
        return obj
    return obj.get_executor(pure=False)


def connect(spec: str | None):
    """`local` / None -> None; `dask://host:port` (or `tcp://...`) -> a connected Client."""
    spec = (spec or os.environ.get(ENV) or "local").strip()
    if spec == "local":
        return None
    if not spec.startswith(("dask://", "tcp://", "tls://")):
        raise UsageError(f"--executor {spec!r}: use 'local' or dask://HOST:PORT")
    try:
        from distributed import Client
    except ImportError:
        raise UsageError(f"--executor {spec} needs Dask: {INSTALL}") from None
    address = "tcp://" + spec[len("dask://"):] if spec.startswith("dask://") else spec
    try:
        return Client(address, timeout="10s")
    except OSError as e:
        raise UsageError(f"cannot reach the Dask scheduler at {address}: {e}") from None


def _visible(paths: list[str]) -> dict[str, bool]:
    return {p: os.path.exists(p) for p in paths}


def check_mounts(client, roots: list[Path]) -> None:
    """Every worker must see every dataset root the client sees (same paths, shared FS)."""
    paths = [str(Path(r).resolve()) for r in roots if r is not None]
    if not paths:
        return
    seen = client.run(_visible, paths)
    blind = {w: [p for p, ok in got.items() if not ok] for w, got in seen.items()}
    blind = {w: ps for w, ps in blind.items() if ps}
    if blind:
        lines = "; ".join(f"{w} cannot see {', '.join(ps)}" for w, ps in sorted(blind.items()))
        raise UsageError(f"Dask workers do not see the data the client sees ({lines}): mount the same file "
                         f"system at the same paths on every worker")
