"""The only package that touches nnunetv2 / torch, always lazily or in a subprocess.

nnunetv2 reads `nnUNet_raw` / `nnUNet_preprocessed` / `nnUNet_results` once, at import
time, so runs that need other folders go through a child process with its own env.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class NnUNetError(RuntimeError):
    """nnunetv2 failed; the message carries the tail of its output."""


def nnunet_env(raw: Path, preprocessed: Path, results: Path | None = None) -> dict:
    env = dict(os.environ)
    env["nnUNet_raw"] = str(raw)
    env["nnUNet_preprocessed"] = str(preprocessed)
    env["nnUNet_results"] = str(results or Path(preprocessed).parent / "nnUNet_results")
    # one thread per process keeps small runs fast and predictable on 2-core machines
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def plan_and_preprocess(raw: Path, preprocessed: Path, dataset_id: int,
                        configurations=("2d",), num_processes: int = 2,
                        verify: bool = False) -> None:
    """Run nnU-Net's own `nnUNetv2_plan_and_preprocess` for one dataset."""
    args = ["-d", str(dataset_id), "-c", *configurations, "-np",
            *([str(num_processes)] * len(configurations))]
    if verify:
        args.append("--verify_dataset_integrity")
    code = ("import sys; from nnunetv2.experiment_planning.plan_and_preprocess_entrypoints "
            "import plan_and_preprocess_entry as m; sys.argv[0]='nnUNetv2_plan_and_preprocess'; m()")
    Path(preprocessed).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", code, *args],
                          env=nnunet_env(raw, preprocessed), capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise NnUNetError(f"nnUNetv2_plan_and_preprocess failed (exit {proc.returncode}):\n{tail}")
