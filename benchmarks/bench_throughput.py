#!/usr/bin/env python
"""Benchmark the throughput verdict: its predicted epoch against a real `dataguard train`.

Builds the demo's Dataset901 (real nnunetv2 preprocessing, 2d), then for each
nnUNet_n_proc_DA given: `dataguard doctor --throughput` (the three rates, the bound, the
predicted epoch) and a `dataguard train` of the same length on the CPU, and prints the
predicted epoch time over the measured one (nnU-Net's epoch times, median, epoch 0 left out).

usage:
  python benchmarks/bench_throughput.py                      # DA workers 0 and 2, ~4 min on 2 cores
  python benchmarks/bench_throughput.py --workers 0 --iterations 20 --epochs 6
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "throughput")
    a = ap.parse_args()
    from dataguard.demo.project import build_clean
    from dataguard.train.logs import load_runs

    shutil.rmtree(a.work, ignore_errors=True)
    build_clean(a.work, n_cases=8, log=lambda m: None)
    exe = str(Path(sys.executable).with_name("dataguard"))
    print(f"{'DA workers':>10} {'full/s':>7} {'net/s':>7} {'data/s':>7} {'bound':>13} {'predicted':>10} "
          f"{'measured':>9} {'ratio':>6}")
    for fold, workers in enumerate(a.workers):
        env = {**os.environ, "nnUNet_raw": str(a.work / "nnUNet_raw"),
               "nnUNet_preprocessed": str(a.work / "nnUNet_preprocessed"),
               "nnUNet_results": str(a.work / "nnUNet_results"), "nnUNet_n_proc_DA": str(workers),
               "nnUNet_def_n_proc": "1", "DATAGUARD_STATE_DIR": tempfile.mkdtemp(prefix="dg-bench-state-")}
        length = ["--iterations-per-epoch", str(a.iterations), "--val-iterations", "2"]
        doc = subprocess.run([exe, "doctor", "-d", "901", "-c", "2d", "--throughput", "--device", "cpu", "--steps",
                              str(a.iterations), *length, "--format", "json"], env=env, capture_output=True,
                             text=True, check=True)
        tp = json.loads(doc.stdout)["throughput"]
        subprocess.run([exe, "train", "901", "2d", str(fold % 2), "--device", "cpu", "--epochs", str(a.epochs),
                        *length, "--no-val-mirroring", "--allow", "DG504"], env=env, capture_output=True,
                       text=True, check=True)
        folder = a.work / "nnUNet_results/Dataset901_DemoCardiac/nnUNetTrainer_dataguard__nnUNetPlans__2d"
        (run,) = load_runs(folder / f"fold_{fold % 2}")
        shutil.rmtree(folder / f"fold_{fold % 2}")
        m = run.epoch_time
        print(f"{workers:>10} {tp['full_per_s']:>7.2f} {tp['compute_per_s']:>7.2f} {tp['data_per_s']:>7.2f} "
              f"{tp['bound']:>13} {tp['epoch_seconds']:>9.2f}s {m:>8.2f}s {tp['epoch_seconds'] / m:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
