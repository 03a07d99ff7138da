"""nnU-Net's own validation run for folds that have no out-of-fold probabilities yet.

The ensemble weight search needs every fold's validation probabilities (`--npz`). A fold
trained without `--npz` has only label maps; `nnUNetv2_train ... --val --npz` makes them from
the trained checkpoint. These are the calls, and the step that runs them, for every face.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..engine.checkpoint_trust import prove_plain
from ..nnunet import run_streamed
from ..train.launch import TrainCall, training_call
from ..train.settings import TrainSettings, base_of


def validation_calls(dataset: str, models: list, missing: dict[str, list[str]]) -> list[tuple]:
    """(model, fold, TrainCall) for each fold of `missing` ({model spec: [fold, ...]})."""
    out = []
    by_spec = {m.spec: m for m in models}
    for spec, folds in missing.items():
        m = by_spec[spec]
        for k in folds:
            if base_of(m.trainer):       # dataguard's trainer: through the launcher, as it was trained
                call = training_call(dataset, m.configuration, k, trainer=m.trainer, plans=m.plans, device="cuda",
                                     npz=True, cont=False, settings=TrainSettings())
                call.argv.append("--val")
            else:
                call = TrainCall(["nnUNetv2_train", dataset, m.configuration, k, "-tr", m.trainer, "-p", m.plans,
                                  "--val", "--npz"])
            out.append((m, k, call))
    return out


def run_validation(calls: list[tuple], trust: tuple = (),
                   on_call: Callable[[TrainCall], None] | None = None) -> None:
    """Run each call; nnU-Net's validation loads the checkpoint with weights_only=False, so
    each checkpoint is proven plain data (or trusted by blake3) first."""
    for m, fold, call in calls:
        prove_plain(Path(m.folder) / f"fold_{fold}" / "checkpoint_final.pth", tuple(trust))
        if on_call:
            on_call(call)
        run_streamed(call.argv, {**os.environ, **call.env},
                     f"nnU-Net's validation run of {m.spec} fold {fold} ({call.shell()})")
