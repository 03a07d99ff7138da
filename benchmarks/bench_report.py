#!/usr/bin/env python
"""`dataguard report` size and time: a 50-case raw dataset with 10 flagged cases.

50 synthetic cardiac cases (`synthetic.write_raw_dataset`, 48x48x12 would be too kind:
128x128x16 voxels), 10 of them broken: 4 labels saved as float with 1.00000002 (DG401),
3 with a label value not in dataset.json (DG402), 3 with a label whose spacing differs from
the image (DG304). Scanned once (warm manifest), then `dataguard report` is timed as a
whole process (import, incremental scan, thumbnails, template). Targets: under 5 MB, under
10 s on 2 cores.

usage:  python benchmarks/bench_report.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE / "_work" / "report"
SIZE_MB, SECONDS = 5.0, 10.0


def generate() -> Path:
    import nibabel as nib
    import numpy as np

    sys.path.insert(0, str(HERE.parent))
    from dataguard.demo.synthetic import write_raw_dataset

    ds = ROOT / "nnUNet_raw" / "Dataset950_ReportBench"
    if (ROOT / "ready").exists():
        return ds
    write_raw_dataset(ROOT / "nnUNet_raw", 950, "ReportBench", n_cases=50, shape=(128, 128, 16))
    labels = sorted((ds / "labelsTr").glob("*.nii.gz"))
    for i, p in enumerate(labels[:10]):
        img = nib.load(p)
        arr = np.asanyarray(img.dataobj)
        if i < 4:
            out = nib.Nifti1Image(np.where(arr == 1, 1.00000002, arr).astype(np.float64), img.affine)
        elif i < 7:
            arr = arr.copy()
            arr[0, 0, 0] = 9
            out = nib.Nifti1Image(arr, img.affine)
        else:
            aff = img.affine.copy()
            aff[2, 2] *= 1.5
            out = nib.Nifti1Image(arr, aff)
        nib.save(out, p)
    (ROOT / "ready").touch()
    return ds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ds = generate()
    exe = str(Path(sys.executable).with_name("dataguard"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    man = ROOT / "manifests"
    subprocess.run([exe, "scan", str(ds), "--manifest-dir", str(man), "--fail-on", "never"], env=env,
                   capture_output=True, check=True)
    times, out = [], ROOT / "report.html"
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        p = subprocess.run([exe, "report", str(ds), "--manifest-dir", str(man), "-o", str(out), "--submissions",
                            str(ROOT)], env=env, capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
        if p.returncode:
            print(p.stderr)
            return 1
    size = out.stat().st_size / 1e6
    flagged = out.read_text("utf-8").count('class="card"')
    print(f"report of 50 cases ({flagged} cards: 10 flagged + 6 sampled clean): {size:.2f} MB "
          f"(target < {SIZE_MB} MB): {'PASS' if size < SIZE_MB else 'FAIL'}")
    print(f"built in best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s, whole process, warm "
          f"manifest (target < {SECONDS} s): {'PASS' if min(times) < SECONDS else 'FAIL'}")
    return 0 if size < SIZE_MB and min(times) < SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
