"""Predictions through nnU-Net's own `nnUNetv2_predict`, one model at a time, resumable.

A model is `CONFIG[:FOLDS[:TRAINER[:PLANS]]]` (`3d_fullres`, `2d:0,1`,
`2d:all:nnUNetTrainer_dataguard`). Each runs as a child process (`nnUNetv2_predict
--save_probabilities`: nothing is inherited through fork, which is what makes it safe on
Windows) into its own folder of the work directory. A model's probabilities are reused when
the blake3 of its checkpoints and of the test images, and the prediction options, are what
they were: a second run with only a new weights file runs no inference.
"""
from __future__ import annotations

import difflib
import json
import os
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..doctor.report import Workers, predict_workers
from ..engine.checkpoint_trust import prove_plain
from ..errors import UsageError, nnunet_failed
from ..fsio import atomic_write_text, blake3_file
from ..train.settings import base_of
from .predictions import find_probabilities
from .trained import FoldChoice, choose_folds, describe, fold_findings, fold_names, run_facts

INPUTS = "dataguard_inputs.json"
DEFAULT_TRAINERS = ("nnUNetTrainer_dataguard", "nnUNetTrainer")


@dataclass
class ModelSpec:
    spec: str
    configuration: str
    folds: list[str]                   # the folds used: finished ones, unfinished only when asked
    trainer: str
    plans: str
    folder: Path                       # the trainer folder under nnUNet_results
    choice: FoldChoice | None = None   # which folds are used, which skipped and why

    @property
    def safe_name(self) -> str:
        return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in self.spec)

    @property
    def include_unfinished(self) -> bool:
        return bool(self.choice and self.choice.unfinished_used)

    def fold_findings(self) -> list:
        """DG806 for each fold skipped as unfinished, or used although unfinished."""
        if self.choice is None:
            return []
        return fold_findings(self.spec, self.choice, {s.fold: resume_hint(self, s.fold) for s in self.choice.skipped
                                                      if s.usable})

    def describe(self) -> str:
        """`2d: folds 0, 1; skipped fold 2 (no checkpoint_final.pth: ...)`."""
        return describe(self.spec, self.choice or FoldChoice([], []))


def resume_hint(m: ModelSpec, fold: str) -> str:
    """The command that finishes an interrupted fold, with the device its run used."""
    device = run_facts(m.folder / f"fold_{fold}").device
    dataset = m.folder.parent.name
    base = base_of(m.trainer)
    if base:
        extra = (["--trainer", base] if base != "nnUNetTrainer" else []) + \
                (["--plans", m.plans] if m.plans != "nnUNetPlans" else [])
        return " ".join(["dataguard train", dataset, m.configuration, fold, *extra, "--continue", "--device", device])
    return " ".join(["nnUNetv2_train", dataset, m.configuration, fold, "-tr", m.trainer, "-p", m.plans, "--c",
                     "-device", device])


def _did_you_mean(spec: str, config: str, results_dataset: Path) -> str:
    """`(did you mean 3d_fullres? have: 2d, 3d_fullres)` from the trainer folders that exist."""
    try:
        names = [e.name for e in os.scandir(results_dataset) if e.name.count("__") >= 2 and e.is_dir(
            follow_symlinks=False)]
    except OSError:
        names = []
    configs = sorted({n.split("__", 2)[2] for n in names})
    close = difflib.get_close_matches(config, configs, n=1)
    mean = f"did you mean {close[0]}? " if close else ""
    return f" ({mean}have: {', '.join(configs) or 'no trained model'})"


def parse_model(spec: str, results_dataset: Path, include_unfinished: bool = False,
                require_finished: bool = True) -> ModelSpec:
    """A `--model` spec as a ModelSpec whose folds are the finished ones of those named (or of
    every fold_K folder): unfinished folds only with `include_unfinished`, skipped folds in
    `.choice`. No usable fold: UsageError, unless `require_finished` is False."""
    parts = spec.split(":")
    if not parts[0] or len(parts) > 4:
        raise UsageError(f"--model {spec!r}: use CONFIG[:FOLDS[:TRAINER[:PLANS]]], e.g. 3d_fullres:0,1,2")
    config = parts[0]
    plans = parts[3] if len(parts) > 3 and parts[3] else "nnUNetPlans"
    if len(parts) > 2 and parts[2]:
        trainer = parts[2]
    else:
        trainer = next((t for t in DEFAULT_TRAINERS if (results_dataset / f"{t}__{plans}__{config}").is_dir()),
                       DEFAULT_TRAINERS[-1])
    folder = results_dataset / f"{trainer}__{plans}__{config}"
    if not folder.is_dir() or folder.is_symlink():
        raise UsageError(f"--model {spec!r}: no trained model at {folder}"
                         + _did_you_mean(spec, config, results_dataset))
    have = fold_names(folder)
    if len(parts) > 1 and parts[1] and parts[1] != "all":
        folds = [f.strip() for f in parts[1].split(",") if f.strip()]
        unknown = [f for f in folds if f not in have]
        if unknown:
            raise UsageError(f"--model {spec!r}: no fold_{unknown[0]} in {folder} (have: "
                             f"{', '.join(have) or 'no fold'})")
    else:
        folds = have
    if not folds:
        raise UsageError(f"--model {spec!r}: no fold_* folders in {folder}")
    choice = choose_folds(folder, folds, include_unfinished)
    m = ModelSpec(spec, config, [s.fold for s in choice.used], trainer, plans, folder, choice)
    if not m.folds and require_finished:
        why = "; ".join(f"fold {s.fold}: {s.why}" for s in choice.skipped)
        hint = "" if include_unfinished or not any(s.usable for s in choice.skipped) else \
            "; or take them as they are with --include-unfinished"
        first = next((s.fold for s in choice.skipped if s.usable), None)
        finish = f"; finish one: {resume_hint(m, first)}" if first is not None else ""
        raise UsageError(f"--model {spec!r}: no finished fold ({why}){finish}{hint}")
    return m


def checkpoint_files(m: ModelSpec, checkpoint: str) -> list[Path]:
    out = []
    for f in m.folds:
        p = m.folder / f"fold_{f}" / f"checkpoint_{checkpoint}.pth"
        try:
            regular = stat.S_ISREG(os.lstat(p).st_mode)
        except OSError:
            regular = None
        if regular is None:
            unfinished = checkpoint == "final" and m.choice is not None and any(
                s.fold == f and not s.finished for s in m.choice.used)
            raise UsageError(f"model {m.spec}: {p} is missing ("
                             + ("an unfinished fold has no final checkpoint: use --checkpoint best with "
                                "--include-unfinished" if unfinished else
                                f"train it, or use --checkpoint {'final' if checkpoint == 'best' else 'best'}")
                             + ")")
        if not regular:
            raise UsageError(f"model {m.spec}: {p} is not a regular file (a link?): not followed")
        out.append(p)
    return out


def input_record(m: ModelSpec, images: list[Path], checkpoint: str, tta: bool, device: str) -> dict:

    return {"model": m.spec, "trainer": m.trainer, "plans": m.plans, "configuration": m.configuration,
            "folds": m.folds, "checkpoint": checkpoint, "tta": tta,
            "checkpoints": {str(p): blake3_file(p, follow_links=True) for p in checkpoint_files(m, checkpoint)},
            "images": {p.name: blake3_file(p, follow_links=True) for p in images}}


@dataclass
class PredictRun:
    model: ModelSpec
    out_dir: Path
    reused: bool
    seconds: float = 0.0
    record: dict = field(default_factory=dict)


def device_problem(device: str) -> str | None:
    """Why nnUNetv2_predict cannot run on `device` here (what train's gate checks), with the
    way out; None when it can. Imports torch: call it only where a prediction is about to run."""
    if device == "cpu":
        return None
    try:
        import torch
    except Exception as e:              # noqa: BLE001 - a torch that cannot load cannot predict either
        return f"torch cannot be imported ({type(e).__name__}: {e})"
    if device == "cuda" and not torch.cuda.is_available():
        build = "" if torch.version.cuda else " (this torch is a CPU-only build)"
        return f"--device cuda, but torch sees no CUDA GPU{build}: use --device cpu, or install a CUDA build of torch"
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return "--device mps, but MPS (Apple GPU) is not available here: use --device cpu"
    return None


def predict_model(m: ModelSpec, dataset: str, images_dir: Path, work: Path, *, checkpoint: str = "final",
                  tta: bool = True, device: str = "cuda", cases: list[str], on_progress=None,
                  trust: tuple = (), npp: int | None = None, nps: int | None = None) -> PredictRun:
    """Run (or reuse) one model's probabilities for every test case.

    `npp`/`nps`: nnUNetv2_predict's -npp/-nps (what fits in RAM: `prediction_workers`); None:
    1 and 1 on the CPU, nnU-Net's own defaults elsewhere.
    nnUNetv2_predict loads checkpoints with `weights_only=False`: each one must first load
    with `weights_only=True` here (checkpoint_trust.prove_plain), so none can run code.
    `trust`: checkpoints the user vouched for (`--trust-checkpoint`)."""
    images = sorted(p for p in Path(images_dir).iterdir() if p.name.endswith(".nii.gz"))
    out = work / m.safe_name
    record = input_record(m, images, checkpoint, tta, device)
    stamp = out / INPUTS
    have = find_probabilities(out)
    try:
        old = json.loads(stamp.read_text("utf-8"))
    except (OSError, ValueError):
        old = None
    if old is not None and {k: v for k, v in old.items() if k != "device"} == \
            {k: v for k, v in record.items() if k != "device"} and set(cases) <= set(have):
        if on_progress:
            on_progress(m.spec, len(cases), len(cases))
        return PredictRun(m, out, True, 0.0, record)
    problem = device_problem(device)
    if problem:
        raise UsageError(f"cannot predict with {m.spec}: {problem}")
    for p in checkpoint_files(m, checkpoint):
        prove_plain(p, trust)
    stamp.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    for p in out.glob("*.npz"):
        p.unlink()
    exe = Path(sys.executable).with_name("nnUNetv2_predict")
    argv = [str(exe) if exe.exists() else "nnUNetv2_predict", "-i", str(images_dir), "-o", str(out), "-d", dataset,
            "-c", m.configuration, "-f", *m.folds, "-tr", m.trainer, "-p", m.plans, "-chk",
            f"checkpoint_{checkpoint}.pth", "--save_probabilities", "-device", device]
    argv += [] if tta else ["--disable_tta"]
    if npp is None and nps is None and device == "cpu":
        npp, nps = 1, 1
    argv += ["-npp", str(npp)] if npp else []
    argv += ["-nps", str(nps)] if nps else []
    log = out / "dataguard_predict.log"
    t0 = time.monotonic()
    with open(log, "wb") as f:
        f.write((" ".join(argv) + "\n").encode())
        f.flush()
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ})
        while proc.poll() is None:
            if on_progress:
                on_progress(m.spec, len(list(out.glob("*.npz"))), len(cases))
            time.sleep(0.5)
    if proc.returncode != 0:
        raise nnunet_failed(f"nnUNetv2_predict for model {m.spec}", proc.returncode,
                            log.read_text("utf-8", errors="replace"), where=f" (its whole output: {log})")
    if on_progress:
        on_progress(m.spec, len(cases), len(cases))
    atomic_write_text(stamp, json.dumps(record, indent=2) + "\n")
    return PredictRun(m, out, False, time.monotonic() - t0, record)


def prediction_workers(m: ModelSpec, images_dir: Path, device: str) -> Workers:
    """The -npp/-nps that fit this model's export (all classes at the original spacing) in RAM,
    or nnUNet_npp/nnUNet_nps when set (doctor's resource model)."""
    return predict_workers(m.folder / "plans.json", m.folder / "dataset.json", m.configuration, Path(images_dir),
                           device=device)
