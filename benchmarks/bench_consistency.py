#!/usr/bin/env python
"""What the consistency checks (DG307-DG310) cost: the full raw scan before and after them.

The raw-image check now also hashes the decoded voxels (blake3), samples a fixed stride of
them for intensity percentiles and reads the axis codes; a dataset check compares the cases.
This script scans bench_raw.py's synthetic raw dataset (200 cases, ~425 MB of .nii.gz) with
this checkout and with a checkout of BASE (a commit before the consistency checks, default
`2bb50b3`), each as a fresh `python -m dataguard scan --full` process, page cache warm,
`--repeat` times interleaved, and prints the ratio of the best runs.

  target: full raw scan with the checks <= 1.15 x without them
          an incremental rescan (nothing changed) stays as fast: the facts are in the manifest

usage:
  python benchmarks/bench_consistency.py                  # ~1 min once generated
  python benchmarks/bench_consistency.py --cases 40 --mb-total 80 --repeat 2
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import bench_raw  # noqa: E402  (the synthetic raw dataset)

TARGET = 1.15


def worktree(base: str, work: Path) -> Path:
    """A checkout of `base` (git worktree, made once) whose dataguard/ the old runs import."""
    dst = Path(tempfile.gettempdir()) / f"dataguard-bench-base-{base}"     # outside the repo: its own package copy
    if not (dst / "dataguard").is_dir():
        shutil.rmtree(dst, ignore_errors=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(dst), base],
                       check=True, capture_output=True)
    return dst


def timed_scan(tree: Path, ds: Path, manifest: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "dataguard", "scan", str(ds), "--full", "--manifest-dir",
                        str(manifest), "--format", "json", "--fail-on", "never", "--no-progress"],
                       env=env, cwd=str(tree), capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode not in (0, 1):
        raise SystemExit(p.stderr[-2000:])
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--mb-total", type=float, default=425.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--base", default="2bb50b3", help="a commit without the consistency checks")
    ap.add_argument("--work", type=Path, default=HERE / "_work")
    a = ap.parse_args()
    ds = bench_raw.ensure_dataset(a.work, a.cases, a.mb_total, 0, False)
    files = bench_raw.ds_files(ds)
    for f in files:
        f.read_bytes()
    old = worktree(a.base, a.work)
    import compileall

    for tree in (old, REPO):          # as pip install does: no process pays for compiling (PYTHONDONTWRITEBYTECODE)
        compileall.compile_dir(str(tree / "dataguard"), quiet=1)
    runs: dict[str, list[float]] = {"before": [], "after": [], "rescan": []}
    tmp = Path(tempfile.mkdtemp(prefix="dg-bench-consistency-"))
    try:
        for rep in range(a.repeat):
            runs["before"].append(timed_scan(old, ds, tmp / f"old-{rep}"))
            runs["after"].append(timed_scan(REPO, ds, tmp / f"new-{rep}"))
            env = dict(os.environ, PYTHONPATH=str(REPO))
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "dataguard", "scan", str(ds), "--manifest-dir", str(tmp / f"new-{rep}"),
                            "--format", "json", "--fail-on", "never", "--no-progress"], env=env, capture_output=True)
            runs["rescan"].append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(f.stat().st_size for f in files) / 1e6
    b, n, r = min(runs["before"]), min(runs["after"]), min(runs["rescan"])
    print(f"{len(files)} files, {size:.0f} MB of .nii.gz; whole processes, best of {a.repeat}")
    print(f"  full raw scan without the consistency checks ({a.base}) {b:7.3f} s")
    print(f"  full raw scan with them (this checkout)             {n:7.3f} s")
    print(f"  rescan with them, nothing changed                   {r:7.3f} s")
    print(f"  {'PASS' if n / b <= TARGET else 'FAIL'}  with / without = {n / b:.3f} (target <= {TARGET})")


if __name__ == "__main__":
    main()
