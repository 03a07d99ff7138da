#!/usr/bin/env python
"""Benchmark dataguard's surface metrics (evaluate/surface.py) against MONAI's on one label pair.

A 512 x 512 x 300 CT-sized pair at 0.8 x 0.8 x 2.5 mm: a liver-sized smooth organ (about 1.5
litres) as the reference, and a prediction that is the same organ shifted, with a bumpy
outline and a stray blob (what a real model gets wrong). Both written as .nii.gz and read back,
so the decode is measured too. Then, best of --repeat, on the same in-memory masks:

  dataguard   surface_metrics(): HD, HD95, ASSD and NSD at 2 mm from one pair of EDTs on the
              box around both masks
  MONAI       compute_hausdorff_distance(percentile=95) + compute_surface_dice(2 mm) (the two
              metrics the issue names; MONAI computes each from its own distance transforms)

Prints both times, their ratio (target: dataguard at most MONAI's time), the read time of the
two files, the agreement of the figures, and the peak memory of dataguard's call (tracemalloc).

usage:
  python benchmarks/bench_surface.py
  python benchmarks/bench_surface.py --shape 256 256 120 --repeat 3
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def make_pair(shape, seed: int = 0):
    """(reference, prediction) boolean masks (z, y, x)."""
    import numpy as np
    from scipy import ndimage

    z, y, x = shape
    g = np.ogrid[:z, :y, :x]
    c = (z * 0.5, y * 0.45, x * 0.55)
    r = (z * 0.22, y * 0.2, x * 0.25)
    ref = sum(((a - ca) / ra) ** 2 for a, ca, ra in zip(g, c, r)) <= 1.0
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal((z // 4 + 1, y // 8 + 1, x // 8 + 1)), 1.5)
    bump = ndimage.zoom(noise, (z / noise.shape[0], y / noise.shape[1], x / noise.shape[2]), order=1)[:z, :y, :x]
    c2 = (c[0] + 1.5, c[1] + 3, c[2] - 2)
    pred = sum(((a - ca) / ra) ** 2 for a, ca, ra in zip(g, c2, r)) <= 1.0 + 0.6 * bump
    pred[int(z * 0.8):int(z * 0.8) + 6, 40:60, 40:60] = True            # a stray blob far away
    return ref, pred


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512], metavar=("Z", "Y", "X"))
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    import nibabel as nib
    import numpy as np
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    from dataguard.evaluate.crossval import read_labels
    from dataguard.evaluate.surface import surface_metrics

    spacing = (2.5, 0.8, 0.8)
    ref, pred = make_pair(tuple(a.shape))
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, m in (("ref", ref), ("pred", pred)):
            p = Path(tmp) / f"{name}.nii.gz"
            nib.save(nib.Nifti1Image(m.astype(np.uint8), np.diag([*spacing, 1.0])), p)
            paths.append(p)
        t0 = time.perf_counter()
        ref = read_labels(paths[0]) == 1
        pred = read_labels(paths[1]) == 1
        t_read = time.perf_counter() - t0
    mine, theirs = [], []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        got = surface_metrics(ref, pred, spacing, tolerance=2.0)
        mine.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        y = torch.from_numpy(np.stack([~ref, ref])[None].astype(np.float32))
        yp = torch.from_numpy(np.stack([~pred, pred])[None].astype(np.float32))
        hd95 = compute_hausdorff_distance(yp, y, percentile=95, spacing=list(spacing)).item()
        nsd = compute_surface_dice(yp, y, class_thresholds=[2.0], spacing=list(spacing)).item()
        theirs.append(time.perf_counter() - t0)
        del y, yp
    tracemalloc.start()
    surface_metrics(ref, pred, spacing, tolerance=2.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t_mine, t_monai = min(mine), min(theirs)
    n = ref.size
    print(f"pair {tuple(a.shape)} at {spacing} mm ({n / 1e6:.0f} M voxels), reference {int(ref.sum())} voxels")
    print(f"read both .nii.gz: {t_read:.2f} s")
    print(f"dataguard HD/HD95/ASSD/NSD: {t_mine:.2f} s (peak {peak / 2**20:.0f} MiB)   "
          f"MONAI HD95 + NSD: {t_monai:.2f} s")
    print(f"ratio dataguard / MONAI = {t_mine / t_monai:.2f} (target <= 1: {'met' if t_mine <= t_monai else 'NOT met'})")
    print(f"agreement: HD95 {got.hd95:.4f} vs {hd95:.4f} mm, NSD {got.nsd:.5f} vs {nsd:.5f}")
    return 0 if t_mine <= t_monai else 1


if __name__ == "__main__":
    sys.exit(main())
