#!/usr/bin/env python
"""`dataguard evaluate`'s scoring against nnU-Net's own `compute_metrics_on_folder`.

5 folds x 50 validation cases (default), each a reference and a prediction label map
(`.nii.gz`, uint8, 4 labels, 160x160x24 voxels, the prediction a perturbed copy of the
reference), in nnU-Net's layout: one prediction folder per fold, one reference folder.
Both sides get 2 workers (nnU-Net: `num_processes=2`, its own process pool; dataguard: 2
threads) and score every case and label; both read the same files,
page cache warm (one untimed warm-up pass each). Target: dataguard / nnU-Net <= 1.0.

usage:
  python benchmarks/bench_evaluate.py                 # ~1-2 min on 2 cores (+ ~30 s generation)
  python benchmarks/bench_evaluate.py --cases 10 --repeat 1
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE / "_work" / "evaluate"


def generate(folds: int, cases: int, shape) -> Path:
    import nibabel as nib
    import numpy as np

    marker = ROOT / f"ready_{folds}x{cases}_{'x'.join(map(str, shape))}"
    if marker.exists():
        return ROOT
    shutil.rmtree(ROOT, ignore_errors=True)
    (ROOT / "gt").mkdir(parents=True)
    rng = np.random.default_rng(0)
    aff = np.diag([1.25, 1.25, 8.0, 1.0])
    zz, yy, xx = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    for k in range(folds):
        (ROOT / f"fold_{k}").mkdir()
        for i in range(cases):
            c = f"case_{k:01d}{i:03d}"
            cy, cx = shape[1] / 2 + rng.uniform(-8, 8), shape[2] / 2 + rng.uniform(-8, 8)
            d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            ref = np.zeros(shape, np.uint8)
            ref[d < 30] = 1
            ref[d < 20] = 2
            ref[(d > 32) & (d < 40) & (xx < cx)] = 3
            pred = ref.copy()
            noise = rng.random(shape) < 0.03
            pred[noise] = rng.integers(0, 4, int(noise.sum()))
            for arr, folder in ((ref, ROOT / "gt"), (pred, ROOT / f"fold_{k}")):
                img = nib.Nifti1Image(arr.transpose(2, 1, 0), aff)
                img.set_data_dtype(np.uint8)
                nib.save(img, folder / f"{c}.nii.gz")
    marker.touch()
    return ROOT


def run_nnunet(root: Path, folds: int) -> float:
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    t0 = time.perf_counter()
    for k in range(folds):
        compute_metrics_on_folder(str(root / "gt"), str(root / f"fold_{k}"), None, SimpleITKIO(), ".nii.gz",
                                  [1, 2, 3], num_processes=2)
    return time.perf_counter() - t0


def run_dataguard(root: Path, folds: int) -> float:
    from dataguard.evaluate.crossval import FoldSource, evaluate

    t0 = time.perf_counter()
    sources = []
    for k in range(folds):
        found = sorted(p.name[:-7] for p in (root / f"fold_{k}").glob("*.nii.gz"))
        sources.append(FoldSource("bench", k, root / f"fold_{k}", found, found=found))
    ev = evaluate("bench", root / "gt", {1: "a", 2: "b", 3: "c"}, sources, jobs=2)
    assert len(ev.scores) == 3 * sum(len(s.found) for s in sources) and not ev.findings
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--cases", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    shape = (24, 160, 160)
    t = time.perf_counter()
    root = generate(args.folds, args.cases, shape)
    print(f"data: {args.folds} folds x {args.cases} cases, {shape} uint8 .nii.gz ({time.perf_counter() - t:.1f} s)")
    run_nnunet(root, args.folds), run_dataguard(root, args.folds)          # warm-up: page cache, imports
    ours, theirs = [], []
    for _ in range(args.repeat):
        theirs.append(run_nnunet(root, args.folds))
        ours.append(run_dataguard(root, args.folds))
    ratio = min(ours) / min(theirs)
    print(f"nnU-Net compute_metrics_on_folder: best {min(theirs):.2f} s, median {statistics.median(theirs):.2f} s")
    print(f"dataguard evaluate scoring:       best {min(ours):.2f} s, median {statistics.median(ours):.2f} s")
    print(f"ratio dataguard / nnU-Net: {ratio:.2f}x (target <= 1.0x): {'PASS' if ratio <= 1.0 else 'FAIL'}")
    return 0 if ratio <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
