"""Measure one configuration's training throughput three ways, in nnU-Net's own trainer.

Runs as a child process (`python -m dataguard.train.throughput_probe`): it imports torch and
nnunetv2 and starts nnU-Net's data-augmentation workers, none of which the caller should carry.
The trainer and its data loaders are exactly those `nnUNetv2_train` builds for the
configuration (same patch, batch, augmentation and `nnUNet_n_proc_DA` workers); then it times

  full      `train_step(next(loader))`: what an epoch does
  compute   `train_step(batch)` on one batch held on the device: nnU-Net's `_noDataLoading`
  data      `next(loader)` alone: what the augmentation workers deliver
  val       `validation_step(next(val_loader))`: the per-epoch pseudo-Dice batches

with the evidence beside each phase (the workers' CPU use, iowait from /proc/stat, swap-ins,
GPU use from nvidia-smi). The split is made in memory, so nothing is written into the dataset
(nnU-Net would write `splits_final.json` there); the trainer's own log goes to the temporary
`nnUNet_results` the caller sets. One JSON line per finished step goes to stdout (progress);
the result goes to `--out`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time


def _cpu_line() -> tuple[float, float]:
    """(iowait, total) jiffies of all CPUs since boot; (0, 0) where /proc/stat is not."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            parts = f.readline().split()[1:]
        vals = [float(x) for x in parts[:8]]
        return vals[4], sum(vals)
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0


def _swap_ins() -> float:
    try:
        with open("/proc/vmstat", encoding="ascii") as f:
            for line in f:
                if line.startswith("pswpin "):
                    return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0.0


def _workers_cpu_seconds() -> tuple[float, int]:
    """CPU seconds used so far by this process's children (the augmentation workers)."""
    import psutil

    total, n = 0.0, 0
    for c in psutil.Process().children(recursive=True):
        try:
            t = c.cpu_times()
            total += t.user + t.system
            n += 1
        except psutil.Error:
            continue
    return total, n


class _GpuSampler(threading.Thread):
    """nvidia-smi's utilisation every half second while a phase runs (no torch query: nvidia-smi
    sees what the GPU does, also for other processes)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.exe = shutil.which("nvidia-smi")
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while self.exe and not self.stop.is_set():
            try:
                out = subprocess.run([self.exe, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout.split()
                if out:
                    self.samples.append(float(out[0]))
            except (OSError, ValueError, subprocess.SubprocessError):
                return
            self.stop.wait(0.5)


class Phase:
    """Wall time and evidence of one timed loop."""

    def __init__(self, name: str, steps: int):
        self.name, self.steps = name, steps

    def __enter__(self):
        self.io0, self.tot0 = _cpu_line()
        self.sw0 = _swap_ins()
        self.w0, _ = _workers_cpu_seconds()
        self.gpu = _GpuSampler()
        self.gpu.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.gpu.stop.set()
        io1, tot1 = _cpu_line()
        w1, n = _workers_cpu_seconds()
        self.result = {
            "steps": self.steps, "seconds": self.seconds,
            "per_second": self.steps / self.seconds if self.seconds > 0 else None,
            "iowait": (io1 - self.io0) / (tot1 - self.tot0) if tot1 > self.tot0 else None,
            "swap_ins": _swap_ins() - self.sw0,
            "workers": n,
            "workers_busy": (w1 - self.w0) / (self.seconds * n) if n and self.seconds > 0 else None,
            "gpu_util": sum(self.gpu.samples) / len(self.gpu.samples) if self.gpu.samples else None,
        }
        return False


def _say(**kw) -> None:
    print(json.dumps(kw), flush=True)


def _on_device(batch: dict, device):
    def move(x):
        if isinstance(x, list):
            return [move(i) for i in x]
        return x.to(device, non_blocking=True) if hasattr(x, "to") else x
    return {k: move(v) for k, v in batch.items()}


def measure(dataset: str, configuration: str, plans: str, device: str, steps: int, val_steps: int,
            trainer_name: str = "nnUNetTrainer") -> dict:
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

    t_setup = time.perf_counter()
    if device == "cpu":                       # as nnUNetv2_train sets them (run_training_entry)
        import multiprocessing

        torch.set_num_threads(multiprocessing.cpu_count())
    elif device == "cuda":
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    trainer = get_trainer_from_args(dataset, configuration, 0, trainer_name, plans, device=torch.device(device))
    trainer.initialize()
    if trainer.dataset_class is None:                       # initialize() sets it (2.6+)
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        trainer.dataset_class = infer_dataset_class(trainer.preprocessed_dataset_folder)
    keys = sorted(trainer.dataset_class.get_identifiers(trainer.preprocessed_dataset_folder))
    n_val = max(1, len(keys) // 5)
    trainer.do_split = lambda: (keys[n_val:] or keys, keys[:n_val])       # in memory: no splits file written
    trainer.dataloader_train, trainer.dataloader_val = trainer.get_dataloaders()
    trainer.set_deep_supervision_enabled(trainer.enable_deep_supervision)
    trainer.on_train_epoch_start()
    out = {"dataset": trainer.plans_manager.dataset_name, "configuration": configuration, "device": device,
           "trainer": trainer_name,
           "batch_size": trainer.batch_size, "patch_size": list(trainer.configuration_manager.patch_size),
           "da_workers": get_allowed_n_proc_DA(), "iterations_per_epoch": trainer.num_iterations_per_epoch,
           "val_iterations": trainer.num_val_iterations_per_epoch, "epochs": trainer.num_epochs,
           "cases": len(keys), "torch": torch.__version__, "cores": os.cpu_count()}
    dl, dl_val = trainer.dataloader_train, trainer.dataloader_val
    total = 2 + 3 * steps + val_steps
    done = 0

    def tick(phase):
        nonlocal done
        done += 1
        _say(phase=phase, done=done, total=total)

    try:
        for _ in range(2):                                          # warm-up: kernels, worker queues
            trainer.train_step(next(dl))
            tick("warm-up")
        out["setup_seconds"] = time.perf_counter() - t_setup
        with Phase("full", steps) as p:
            for _ in range(steps):
                trainer.train_step(next(dl))
                tick("full step")
        out["full"] = p.result
        held = _on_device(next(dl), trainer.device)
        with Phase("compute", steps) as p:
            for _ in range(steps):
                trainer.train_step(held)
                tick("no data loading")
        out["compute"] = p.result
        for _ in range(getattr(dl, "num_cached", 0) or 0):         # what the workers made while computing
            next(dl)
        with Phase("data", steps) as p:
            for _ in range(steps):
                next(dl)
                tick("data loader alone")
        out["data"] = p.result
        trainer.network.eval()
        with torch.no_grad(), Phase("val", val_steps) as p:
            for _ in range(val_steps):
                trainer.validation_step(next(dl_val))
                tick("validation step")
        out["val"] = p.result
    finally:
        for loader in (dl, dl_val):
            finish = getattr(loader, "_finish", None)
            if finish is not None:
                finish()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("configuration")
    ap.add_argument("--plans", default="nnUNetPlans")
    ap.add_argument("--trainer", default="nnUNetTrainer")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--val-steps", type=int, default=5)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    res = measure(a.dataset, a.configuration, a.plans, a.device, a.steps, a.val_steps, a.trainer)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(res, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
