"""Where per-file checks run: this machine's pool (the default) or a Dask cluster.

Executor choice and worker tuning live here, the scanner only runs the checks:
`make_executor`, `default_jobs`, `choose_pool` (in-process, threads or a spawn pool, and
the batch sizes for each), `batches`, and the per-worker set-up (`_one_thread_per_worker`
for spawn pools, `_tune_malloc` for Dask workers).

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
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

# The default executor is a thread pool: inflating, hashing and numpy's summaries release
# the GIL and threads cost nothing to start. Measured on 2 cores, 200 legacy .npz cases
# (300 MB) as whole processes: threads 1.51 s, a spawn pool 1.6-1.9 s (workers import
# numpy/isal/blake3: +0.5 CPU-s). Threads only pay when most of the work is GIL-free, so
# below these sizes the checks run in the calling thread: 30,000 files of ~0.7 KB took
# 16.1 s in-process, 19.3 s on 2 threads (a spawn pool: 10.3 s, see make_executor).
# With pool="auto" (the CLI's `--executor local`), big scans get a spawn pool instead:
# blosc2 and the pickle walk hold the GIL, so threads never overlap them. Measured on 2 cores,
# 200 real nnunetv2 cases (2d, 0.9 MB .pkl each) as whole processes: .b2nd 1.42 s in a spawn
# pool vs 1.69 s in threads (1.22 s with one thread: two threads fight over the GIL); legacy
# .npz 1.06 s vs 1.22 s. A pool costs ~0.3 s of start-up per worker, so only past these sizes.
PROCESS_MIN_BYTES = 96 << 20     # of arrays to decode (DECODED_KINDS)
PROCESS_MIN_FILES = 5000
PARALLEL_MIN_BYTES = 24 << 20
PARALLEL_MIN_FILES = 8
PARALLEL_MIN_AVG_BYTES = 64 << 10
BATCH_BYTES = 4 << 20      # files smaller than this travel to a worker in batches ...
BATCH_FILES = 64           # ... of at most this many files / BATCH_BYTES bytes
THREAD_BATCH_BYTES = 256 << 10   # the same for the scan's own thread pool (no IPC to save)
CLUSTER_BATCH_BYTES = 16 << 20   # a Dask task costs milliseconds of scheduling: fewer, larger ones
DECODED_KINDS = frozenset({"npz", "npy", "b2nd", "image", "label"})   # whole arrays decoded

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


def default_jobs() -> int:
    return max(1, os.cpu_count() or 1)


def make_executor(kind: str = "thread", jobs: int | None = None) -> Executor:
    """An executor for per-file checks: "thread" (inflate, blake3 and numpy release the GIL;
    no start-up cost; the default) or "process" (a spawn pool, the same on every OS: ~0.5 s
    to start, worth it when many small files make the work Python-bound; the calling
    script needs an `if __name__ == "__main__":` guard)."""
    jobs = jobs or default_jobs()
    if kind == "thread":
        from concurrent.futures import ThreadPoolExecutor

        return ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="dataguard-check")
    if kind == "process":
        import multiprocessing

        return _quiet_pool(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                           initializer=_one_thread_per_worker)
    raise ValueError(f"executor kind must be 'thread' or 'process', not {kind!r}")


def batches(order: list[int], sizes: list[int], batch_bytes: int = BATCH_BYTES,
            batch_files: int = BATCH_FILES) -> list[list[int]]:
    """Group task indices (already biggest first) so that small files travel together."""
    out: list[list[int]] = []
    cur: list[int] = []
    cur_bytes = 0
    for i in order:
        if sizes[i] >= batch_bytes:
            out.append([i])
            continue
        cur.append(i)
        cur_bytes += sizes[i]
        if cur_bytes >= batch_bytes or len(cur) >= batch_files:
            out.append(cur)
            cur, cur_bytes = [], 0
    if cur:
        out.append(cur)
    return out


@dataclass(frozen=True)
class PoolChoice:
    """How run_file_checks spreads its work: `parallel` False runs batches in the calling
    thread; else on `kind` ("thread"/"process") of our own, or on the caller's executor."""
    parallel: bool
    kind: str
    own: bool
    batch: tuple = ()          # (batch_bytes, batch_files) for `batches`; () for the defaults


def choose_pool(kinds: list[str], sizes: list[int], *, executor=None, jobs: int | None = None,
                force_parallel: bool = False, pool: str = "thread", heavy: int = 0) -> PoolChoice:
    """In-process, threads or a spawn pool, and the batch sizes (see the measurements above).
    heavy: files whose checks compute on the decoded voxels (DG405's round trip: tens of ms of
    GIL-free numpy per label, whatever its compressed size); PARALLEL_MIN_FILES of them are
    parallel work. Measured on 2 cores, 20 raw cardiac cases (20 MB): 0.72 s in-process, 0.46 s
    on 2 threads."""
    jobs = jobs or default_jobs()
    force_parallel = force_parallel or heavy >= PARALLEL_MIN_FILES
    total = sum(sizes)
    n = len(kinds)
    # what threads can overlap is decoding (inflate, blake3, numpy release the GIL); the .pkl
    # walk holds it: 200 real .pkl label walks took 0.21 s in-process, 0.24 s on 2 threads
    decoded = sum(s for k, s in zip(kinds, sizes) if k in DECODED_KINDS)
    parallel = executor is not None or (jobs > 1 and n > 1 and (
        force_parallel or (decoded >= PARALLEL_MIN_BYTES and n >= PARALLEL_MIN_FILES
                           and total >= PARALLEL_MIN_AVG_BYTES * n)))
    own = executor is None
    kind = "process" if (own and parallel and pool == "auto" and
                         (decoded >= PROCESS_MIN_BYTES or n >= PROCESS_MIN_FILES)) else "thread"
    # batches save round trips to other processes; our own threads need none, and single
    # files balance the last seconds better (a batch is 4 MiB of work)
    batch = ((THREAD_BATCH_BYTES, BATCH_FILES) if own and kind == "thread" else
             (CLUSTER_BATCH_BYTES, BATCH_FILES) if on_cluster(executor) else ())
    return PoolChoice(parallel, kind, own, batch)


_MALLOC_TUNED = False


def _tune_malloc() -> None:
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, so glibc hands every
    freed multi-MB inflate buffer back to the OS and page-faults it in again for the next
    file: checks ran 1.6x slower on a worker than in the client (measured). Raise the trim
    and mmap thresholds once per worker process (glibc only; elsewhere nothing happens)."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 256 << 20)      # M_TRIM_THRESHOLD
        libc.mallopt(-3, 64 << 20)       # M_MMAP_THRESHOLD: inflate buffers stay on the heap
    except (OSError, AttributeError):
        pass


def _quiet_pool_class():
    from concurrent.futures import ProcessPoolExecutor

    class QuietPool(ProcessPoolExecutor):
        """A spawn pool whose workers never see Ctrl-C: the terminal sends SIGINT to the whole
        process group, and a worker that got it while importing (or waiting for work) printed its
        own KeyboardInterrupt traceback. A worker is started with SIGINT blocked (the signal mask
        survives fork+exec) and its initializer ignores SIGINT before unblocking it, so the parent
        alone stops: it cancels what is pending and says one line. The parent blocks SIGINT only
        while it starts a worker: a Ctrl-C then stays pending and arrives right after (ignoring
        it there instead lost a Ctrl-C that came while a loaded machine started a worker, and
        the scan ran on to exit 0). Without signal masks (Windows) the parent ignores SIGINT
        for the start, from the main thread only."""

        def _spawn_process(self):
            import signal
            import threading

            if hasattr(signal, "pthread_sigmask"):
                old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
                try:
                    return super()._spawn_process()
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, old)
            if threading.current_thread() is not threading.main_thread():
                return super()._spawn_process()
            old = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                return super()._spawn_process()
            finally:
                signal.signal(signal.SIGINT, old)

    return QuietPool


def _quiet_pool(**kwargs):
    return _quiet_pool_class()(**kwargs)


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def _one_thread_per_worker() -> None:
    """Workers are the parallelism: keep numpy's BLAS pools from starting N threads each.

    Runs in a fresh spawn worker (never in the caller) before it imports numpy, which is
    when BLAS reads these variables; measured on 16 cores: start-up 0.89 s -> 0.52 s.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the parent's to handle (QuietPool)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})   # blocked at the start: now ignored
    for var in THREAD_VARS:
        os.environ.setdefault(var, "1")
    import atexit

    # A worker's results travel through a SimpleQueue (written synchronously), so when the pool
    # says goodbye there is nothing left to flush: skip the interpreter's teardown of numpy,
    # blosc2 and nibabel, which the caller's shutdown() otherwise waits for (0.16 s of a 0.9 s
    # scan of 200 real cases). Registered last, so it runs first.
    atexit.register(os._exit, 0)
