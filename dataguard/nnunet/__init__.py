"""The only package that touches nnunetv2 / torch, always lazily or in a subprocess.

nnunetv2 reads `nnUNet_raw` / `nnUNet_preprocessed` / `nnUNet_results` once, at import
time, so runs that need other folders go through a child process with its own env.
"""
from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

from ..errors import NnUNetError, nnunet_failed  # noqa: F401 - NnUNetError re-exported: callers catch it here


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
        raise nnunet_failed("nnUNetv2_plan_and_preprocess", proc.returncode, proc.stdout + proc.stderr)


def run_streamed(argv: list[str], env: dict, what: str, lines: int = 15) -> None:
    """Run an nnU-Net command with its output shown live on stderr (stdout stays data) and
    its last lines kept: a failure raises NnUNetError with them, not a bare exit code."""
    tail: collections.deque[str] = collections.deque(maxlen=lines)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace")
    with proc.stdout:
        for line in proc.stdout:
            sys.stderr.write(line)
            tail.append(line)
    if proc.wait() != 0:
        raise nnunet_failed(what, proc.returncode, "".join(tail), lines)
