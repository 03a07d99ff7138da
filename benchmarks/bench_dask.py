#!/usr/bin/env python
"""A full scan through a 2-worker Dask LocalCluster against the local pool.

The 1 GB benchmark dataset of bench_scan.py (210 legacy `.npz` cases, ~5 MB each; generated
once under benchmarks/_work/), page cache warm. Timed in one process, best of --repeat:
- local: `Workspace(...).scan(full=True)`, the default thread pool (2 threads);
- dask:  the same with `executor=Client(LocalCluster(n_workers=2, threads_per_worker=1,
  processes=True))`; the cluster is started once before timing (a cluster is long-lived).
Target on one machine: dask / local <= 1.25. `--workers 1 4 16` records scaling on a bigger
machine (each count gets its own cluster).

usage:  python benchmarks/bench_dask.py [--repeat 3] [--workers 2] [--cases 210 --mb-per-case 5]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_scan  # noqa: E402  (the dataset generator)


def timed_scan(ds: Path, executor=None, jobs=None) -> tuple[float, int]:
    import dataguard

    man = Path(tempfile.mkdtemp(prefix="dg-bench-dask-"))
    try:
        t0 = time.perf_counter()
        res = dataguard.Workspace([str(ds)], manifest_dir=man, jobs=jobs, executor=executor).scan(full=True)
        return time.perf_counter() - t0, res.stats.checked
    finally:
        shutil.rmtree(man, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--cases", type=int, default=210)
    ap.add_argument("--mb-per-case", type=float, default=5.0)
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    ds = bench_scan.ensure_dataset(bench_scan.DEFAULT_WORK, args.cases, args.mb_per_case, 0, False)
    bench_scan.warm_cache(bench_scan.dataset_files(ds))
    local = min(timed_scan(ds, jobs=2)[0] for _ in range(args.repeat))
    print(f"local pool (2 threads): best {local:.2f} s")
    ok = True
    for n in args.workers:
        t0 = time.perf_counter()
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=40) as lc, Client(lc) as client:
            started = time.perf_counter() - t0
            timed_scan(ds, executor=client)                       # workers import dataguard once
            runs = [timed_scan(ds, executor=client) for _ in range(args.repeat)]
        best, checked = min(r[0] for r in runs), runs[0][1]
        ratio = best / local
        verdict = ("PASS" if ratio <= 1.25 else "FAIL") if n == 2 else "scaling"
        ok &= verdict != "FAIL"
        print(f"dask LocalCluster {n} worker(s): best {best:.2f} s for {checked} files "
              f"(cluster start {started:.1f} s, not counted): {ratio:.2f}x the local pool "
              f"(target <= 1.25x at 2 workers): {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
