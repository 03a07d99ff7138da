"""Why an epoch is slow: nnU-Net's trainer timed three ways, turned into a verdict (DG908).

nnU-Net ships the means (`nnUNetTrainerBenchmark_5epochs` and its `_noDataLoading` twin,
documentation/benchmarking.md) but no verdict. Here the probe (train/throughput_probe.py, a
child process with torch) times the full step, the step on a batch held on the device and the
data loader alone; `judge` says which one bounds the epoch, with the evidence, predicts the
epoch and the planned run, and names what to change. This module imports no torch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..findings import Finding, Severity
from ..fsio import atomic_write_text, read_json

DATA_SHARE = 0.25          # DA in the training process: data loading this share of a step bounds it
LAG = 1.10                 # workers: data loader this much slower than the compute bounds the epoch
IOWAIT = 0.10              # share of CPU time waiting for the disk (nnU-Net's docs: "above 1" in top's %)
BUSY = 0.80                # augmentation workers' CPU use that means "the CPU is the limit"
SLOW_TORCH = ("2.9.",)     # nnU-Net #3002: 3D convolutions under AMP much slower on torch 2.9


@dataclass
class Throughput:
    dataset: str
    configuration: str
    device: str
    da_workers: int
    full_per_s: float
    compute_per_s: float
    data_per_s: float
    val_step_s: float
    iterations_per_epoch: int
    val_iterations: int
    epochs: int
    epoch_seconds: float
    run_seconds: float
    bound: str                              # "data loading" or "compute"
    evidence: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    measured: dict = field(default_factory=dict)     # the probe's raw result
    seconds: float = 0.0
    trainer: str = "nnUNetTrainer"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["findings"] = [f.to_dict() for f in self.findings]
        return d


def probe(preprocessed: Path, configuration: str, *, plans: str = "nnUNetPlans", device: str = "cuda",
          steps: int = 20, val_steps: int = 5, trainer: str = "nnUNetTrainer", env: dict | None = None,
          on_progress=None, timeout: float = 900) -> dict:
    """Run the probe on the dataset at `preprocessed` (nnUNet_preprocessed/DatasetXXX) in a
    child process; the trainer's files go to a temporary nnUNet_results, removed after."""
    preprocessed = Path(preprocessed)
    with tempfile.TemporaryDirectory(prefix="dataguard-throughput-") as tmp:
        out = Path(tmp) / "result.json"
        child_env = {**os.environ, **(env or {}), "nnUNet_preprocessed": str(preprocessed.parent),
                     "nnUNet_results": str(Path(tmp) / "results"), "PYTHONUNBUFFERED": "1"}
        child_env.setdefault("nnUNet_raw", str(Path(tmp) / "raw"))
        cmd = [sys.executable, "-m", "dataguard.train.throughput_probe", preprocessed.name, configuration,
               "--plans", plans, "--trainer", trainer, "--device", device, "--steps", str(steps),
               "--val-steps", str(val_steps), "--out", str(out)]
        log = Path(tmp) / "probe.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(cmd, env=child_env, stdout=subprocess.PIPE, stderr=err,
                                    stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + timeout
            for line in proc.stdout:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if on_progress is not None and isinstance(ev, dict):
                    on_progress(ev.get("phase", ""), ev.get("done", 0), ev.get("total", 0))
                if time.monotonic() > deadline:
                    proc.kill()
                    break
            proc.wait()
        if proc.returncode != 0 or not out.is_file():
            tail = "\n".join(log.read_text("utf-8", errors="replace").splitlines()[-15:])
            raise RuntimeError(f"the throughput probe failed (exit {proc.returncode}):\n{tail}")
        return json.loads(out.read_text("utf-8"))


def _rate(m: dict, phase: str) -> float:
    v = (m.get(phase) or {}).get("per_second")
    return float(v) if v else float("nan")


def judge(m: dict, *, iterations_per_epoch: int | None = None, val_iterations: int | None = None,
          epochs: int | None = None) -> Throughput:
    """The verdict on a probe result: what bounds the epoch, why, what it predicts, what to do.

    The epoch is predicted as nnU-Net runs it: `iterations_per_epoch` full steps and
    `val_iterations` validation batches (the trainer's defaults unless given, as `dataguard
    train --iterations-per-epoch/--val-iterations` would set them)."""
    ipe = iterations_per_epoch or int(m.get("iterations_per_epoch") or 250)
    vit = val_iterations if val_iterations is not None else int(m.get("val_iterations") or 50)
    n_epochs = epochs or int(m.get("epochs") or 1000)
    full, comp, data = _rate(m, "full"), _rate(m, "compute"), _rate(m, "data")
    val_s = 1.0 / _rate(m, "val")
    workers = int(m.get("da_workers") or 0)
    cores = int(m.get("cores") or os.cpu_count() or 1)
    epoch_s = ipe / full + vit * val_s
    evidence, advice, findings = [], [], []
    f, d = m.get("full") or {}, m.get("data") or {}
    data_s, comp_s = 1.0 / data, 1.0 / comp
    iowait = max(f.get("iowait") or 0.0, d.get("iowait") or 0.0)
    swap = (f.get("swap_ins") or 0.0) + (d.get("swap_ins") or 0.0)
    busy = d.get("workers_busy")
    gpu = f.get("gpu_util")
    if workers == 0:
        share = data_s / (data_s + comp_s)
        evidence.append(f"nnUNet_n_proc_DA=0: augmentation runs in the training process, "
                        f"{share:.0%} of every step")
        bound = "data loading" if share >= DATA_SHARE else "compute"
        if bound == "data loading":
            n = max(1, min(12, cores - 1))
            advice.append(f"set nnUNet_n_proc_DA={n} (augmentation in {n} background worker"
                          f"{'s' if n > 1 else ''} while the network trains)")
    else:
        evidence.append(f"{workers} augmentation worker{'s deliver' if workers > 1 else ' delivers'} "
                        f"{data:.2f} batches/s, the network takes {comp:.2f}/s")
        bound = "data loading" if data_s > comp_s * LAG else "compute"
        if busy is not None:
            evidence.append(f"workers' CPU use {busy:.0%} of {workers} core{'s' if workers > 1 else ''}")
        if bound == "data loading":
            if iowait >= IOWAIT:
                advice.append("the disk is the limit (iowait): put nnUNet_preprocessed on a local SSD, "
                              "not a network or USB disk, and set nnUNet_keep_files_open=True")
            if swap > 0:
                advice.append(f"the machine swaps ({swap:.0f} pages in): fewer workers, nnUNet_n_proc_DA="
                              f"{max(1, workers // 2)}")
            if busy is not None and busy < BUSY and iowait < IOWAIT:
                advice.append(f"the workers wait without using the CPU ({busy:.0%}) or the disk: a network "
                              f"share or another slow source; more workers hide the wait (waiting takes no "
                              f"core): nnUNet_n_proc_DA={workers * 2}, or copy the data to a local disk")
            if busy is None or busy >= BUSY:
                if cores > workers + 1:
                    advice.append(f"the workers are CPU-bound: nnUNet_n_proc_DA={min(cores - 1, workers * 2)} "
                                  f"({cores} cores)")
                else:
                    advice.append(f"the CPU is the limit: {workers} workers busy on {cores} cores; a machine "
                                  f"with more cores, or a smaller patch")
    if iowait:
        evidence.append(f"iowait {iowait:.0%} of CPU time")
    if swap:
        evidence.append(f"{swap:.0f} pages swapped in")
    if gpu is not None:
        evidence.append(f"GPU busy {gpu:.0f}% of the full step")
    if bound == "compute":
        if m.get("device") == "cpu":
            advice.append("training runs on the CPU: a GPU is tens of times faster")
        torch_v = str(m.get("torch") or "")
        if m.get("device") == "cuda" and torch_v.startswith(SLOW_TORCH) and len(m.get("patch_size") or []) == 3:
            advice.append(f"torch {torch_v} runs 3D convolutions under AMP slowly (nnU-Net #3002): "
                          "use torch 2.8 or 2.10+")
    elif not advice:
        advice.append(f"set nnUNet_n_proc_DA={max(1, min(12, cores - 1))}")
    run_s = n_epochs * epoch_s
    if bound == "data loading":
        findings.append(Finding(
            path=f"{m.get('dataset')}/{m.get('configuration')}", code="DG908", severity=Severity.WARNING,
            dataset=m.get("dataset"),
            message=(f"training throughput: data loading bounds the epoch ({full:.2f} steps/s; the network alone "
                     f"{comp:.2f}/s, the data loader alone {data:.2f}/s); " + "; ".join(evidence)),
            help="; ".join(advice)))
    return Throughput(
        dataset=str(m.get("dataset")), configuration=str(m.get("configuration")), device=str(m.get("device")),
        da_workers=workers, full_per_s=full, compute_per_s=comp, data_per_s=data, val_step_s=val_s,
        iterations_per_epoch=ipe, val_iterations=vit, epochs=n_epochs, epoch_seconds=epoch_s, run_seconds=run_s,
        bound=bound, evidence=evidence, advice=advice, findings=findings, measured=m,
        trainer=str(m.get("trainer") or "nnUNetTrainer"))


VERDICTS = "throughput.json"
VERDICT_KEYS = {"configuration": str, "trainer": str, "device": str, "da_workers": int, "full_per_s": float,
                "compute_per_s": float, "data_per_s": float, "epoch_seconds": float, "bound": str,
                "iterations_per_epoch": int, "val_iterations": int, "val_step_s": float, "when": float}


def save_verdict(state: Path, tp: Throughput) -> None:
    """The verdict's figures, one per configuration, trainer and device, in the dataset's state folder."""
    old = {(v["configuration"], v["trainer"], v["device"]): v for v in load_verdicts(state)}
    d = {k: getattr(tp, k) for k in VERDICT_KEYS if k != "when"}
    d["when"] = time.time()
    d["advice"] = list(tp.advice)
    old[(tp.configuration, tp.trainer, tp.device)] = d
    atomic_write_text(Path(state) / VERDICTS, json.dumps(sorted(old.values(), key=lambda v: (
        v["configuration"], v["trainer"], v["device"]))))


def load_verdicts(state: Path) -> list[dict]:
    """Saved verdicts, type-checked (the state folder is ours, but a file is still read bounded
    and a bad entry is left out); [] when there are none."""
    try:
        raw = read_json(Path(state) / VERDICTS, 1 << 20)
    except (OSError, ValueError):
        return []
    out = []
    for v in raw if isinstance(raw, list) else []:
        if not isinstance(v, dict):
            continue
        ok = all(isinstance(v.get(k), t) or (t is float and isinstance(v.get(k), int)) for k, t in VERDICT_KEYS.items())
        if ok:
            advice = v.get("advice")
            out.append({**{k: v[k] for k in VERDICT_KEYS},
                        "advice": [a for a in advice if isinstance(a, str)] if isinstance(advice, list) else []})
    return out
