"""nnU-Net's own validation run for folds that have no out-of-fold probabilities yet.

The ensemble weight search needs every fold's validation probabilities (`--npz`). A fold
trained without `--npz` has only label maps; `nnUNetv2_train ... --val --npz` makes them from
the trained checkpoint. These are the calls, and the step that runs them, for every face.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from ..checks.metadata import METADATA_LIMIT
from ..engine.checkpoint_trust import prove_plain
from ..errors import UsageError
from ..fsio import atomic_write_text, read_regular
from ..nnunet import run_streamed
from ..submit.trained import VALIDATION_STAMP, run_facts
from ..train.launch import TrainCall, training_call
from ..train.settings import FILE, TrainSettings, base_of


def recorded_settings(fold_folder: Path) -> TrainSettings:
    """The trainer settings the fold's run was started with (dataguard_train.json, read bounded
    and without following a link), without the live view's events file; none when unreadable."""
    try:
        raw = read_regular(Path(fold_folder) / FILE, METADATA_LIMIT).decode("utf-8")
        s = TrainSettings.from_json(raw)
    except (OSError, ValueError, TypeError):
        return TrainSettings()
    s.events = None
    return s


def validation_calls(dataset: str, models: list, missing: dict[str, list[str]],
                     checkpoint: str = "final") -> list[tuple]:
    """(model, fold, TrainCall) for each fold of `missing` ({model spec: [fold, ...]}): on the
    device the fold was trained on (its run record; this machine's where it does not say),
    from `checkpoint` (`--val_best` for best)."""
    out = []
    by_spec = {m.spec: m for m in models}
    for spec, folds in missing.items():
        m = by_spec[spec]
        for k in folds:
            fold_folder = Path(m.folder) / f"fold_{k}"
            device = run_facts(fold_folder).device
            if base_of(m.trainer):       # dataguard's trainer: through the launcher, as it was trained
                call = training_call(dataset, m.configuration, k, trainer=m.trainer, plans=m.plans, device=device,
                                     npz=True, cont=False, settings=recorded_settings(fold_folder))
                call.argv.append("--val")
            else:
                call = TrainCall(["nnUNetv2_train", dataset, m.configuration, k, "-tr", m.trainer, "-p", m.plans,
                                  "-device", device, "--val", "--npz"])
            if checkpoint == "best":
                call.argv.append("--val_best")
            out.append((m, k, call))
    return out


def run_validation(calls: list[tuple], trust: tuple = (),
                   on_call: Callable[[TrainCall], None] | None = None) -> None:
    """Run each call; nnU-Net's validation loads the checkpoint with weights_only=False, so
    each checkpoint is proven plain data (or trusted by blake3) first. Afterwards the fold
    records which checkpoint made its validation folder (trained.VALIDATION_STAMP)."""
    for m, fold, call in calls:
        checkpoint = "best" if "--val_best" in call.argv else "final"
        fold_folder = Path(m.folder) / f"fold_{fold}"
        ckpt = fold_folder / f"checkpoint_{checkpoint}.pth"
        if not ckpt.is_file() or ckpt.is_symlink():
            raise UsageError(f"{m.spec} fold {fold} has no {ckpt.name} (an unfinished fold has no final one: "
                             f"--checkpoint best)" if checkpoint == "final" else
                             f"{m.spec} fold {fold} has no {ckpt.name}: nothing to validate with")
        prove_plain(ckpt, tuple(trust))
        if on_call:
            on_call(call)
        run_streamed(call.argv, {**os.environ, **call.env},
                     f"nnU-Net's validation run of {m.spec} fold {fold} ({call.shell()})")
        atomic_write_text(fold_folder / VALIDATION_STAMP, json.dumps({"checkpoint": checkpoint}) + "\n")
