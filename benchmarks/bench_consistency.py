#!/usr/bin/env python
"""What the consistency checks (DG307-DG310) cost: the full raw scan before and after them.

The raw-image check now also hashes the decoded voxels (blake3), samples a fixed stride of
them for intensity percentiles and reads the axis codes; a dataset check compares the cases.
This script scans bench_raw.py's synthetic raw dataset (200 cases, ~425 MB of .nii.gz) with
this checkout and with a copy of it (a git worktree of HEAD, outside the repo) in which the
signature and the consistency check are switched off, so nothing else differs; each as a
fresh `python -m dataguard scan --full` process, page cache warm, `--repeat` times
interleaved, and prints the ratio of the best runs. (`--base COMMIT` compares with an older
build as it was instead.)

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


def worktree(base: str | None) -> Path:
    """A checkout whose dataguard/ the "without" runs import: `base` as it was, or (None) HEAD
    with the signature and the consistency check switched off. Outside the repo, made anew."""
    name = base or "head-without-consistency"
    dst = Path(tempfile.gettempdir()) / f"dataguard-bench-{name}"
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(dst)], capture_output=True)
    shutil.rmtree(dst, ignore_errors=True)
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(dst), base or "HEAD"],
                   check=True, capture_output=True)
    if base is None:
        _switch_off(dst / "dataguard" / "checks" / "raw.py",
                    "sig = None if is_label else ImageSignature(dtype, shape, slope, inter)", "sig = None")
        _switch_off(dst / "dataguard" / "checks" / "raw.py", "    if not is_label:\n        sig = ImageSignature(",
                    "    if False:\n        sig = ImageSignature(")
        _switch_off(dst / "dataguard" / "checks" / "consistency.py", '    if not view.has_raw:\n        return []\n'
                    '    spec = parse_spec(view.meta or {})\n    files = raw_channels', "    return []\n    files = raw_channels")
    return dst


def _switch_off(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        raise SystemExit(f"{path}: cannot find {old!r} to switch off (the benchmark needs updating)")
    path.write_text(text.replace(old, new, 1))


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
    ap.add_argument("--base", default=None, help="compare with this commit as it was (default: this checkout "
                    "with the consistency checks switched off)")
    ap.add_argument("--work", type=Path, default=HERE / "_work")
    a = ap.parse_args()
    ds = bench_raw.ensure_dataset(a.work, a.cases, a.mb_total, 0, False)
    files = bench_raw.ds_files(ds)
    for f in files:
        f.read_bytes()
    old = worktree(a.base)
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
    print(f"  full raw scan without the consistency checks ({a.base or 'switched off'}) {b:7.3f} s")
    print(f"  full raw scan with them (this checkout)             {n:7.3f} s")
    print(f"  rescan with them, nothing changed                   {r:7.3f} s")
    print(f"  {'PASS' if n / b <= TARGET else 'FAIL'}  with / without = {n / b:.3f} (target <= {TARGET})")


if __name__ == "__main__":
    main()
