"""`ws.train` / `ws.dataset(name).train`: the training gate, training, and reading its logs."""
from __future__ import annotations

import time
from pathlib import Path

from ..doctor.throughput import judge, load_verdicts, probe, save_verdict
from ..engine.user_dirs import dataset_dir
from ..engine.layout import planned_configurations
from ..errors import UsageError
from ..names import unknown
from ..nnunet import plan_and_preprocess
from ..train.logs import DEFAULT_PATIENCE, load_runs, plot_runs
from ..train.session import prepare, train
from .scope import Scoped, deprecated


class Training(Scoped):
    """Training of a dataset; reading and plotting logs needs none."""

    def prepare(self, configuration: str, fold: int | str, *, dataset: str | None = None, **kw):
        """The gate (scanning through the Workspace) and nnU-Net's training call:
        (train.preflight.Preflight, train.launch.TrainCall). See train.session.prepare.

        The dataset is this handle's; `dataset` names one as `nnUNetv2_train -d` does instead
        (resolved where nnU-Net looks, not among the workspace's datasets: `dataguard train`)."""
        ident = dataset if dataset is not None else self._ds().name
        return prepare(ident, configuration, fold, scan=self._ws._scan_dataset, **kw)

    def run(self, preflight, call, patience: int | None = None, on_event=None):
        """Run a prepared training to its end and judge it (train.session.TrainResult)."""
        return train(preflight, call, patience, on_event)

    def runs(self, path: Path, patience: int | None = None) -> list:
        """Every training run under `path` read from nnU-Net's logs (train.logs.Run), judged
        (collapses, wasted epochs) with that patience."""
        return load_runs(Path(path), patience=DEFAULT_PATIENCE if patience is None else patience)

    @staticmethod
    def plot(runs: list, path: Path) -> Path:
        """Per-label pseudo Dice of runs as a PNG."""
        return plot_runs(runs, path)

    def throughput(self, configuration: str, *, plans: str = "nnUNetPlans", device: str = "cuda",
                   steps: int = 20, val_steps: int = 5, iterations_per_epoch: int | None = None,
                   val_iterations: int | None = None, epochs: int | None = None, env: dict | None = None,
                   trainer: str = "nnUNetTrainer", on_progress=None):
        """Why an epoch of this configuration is slow (doctor.throughput.Throughput, DG908): nnU-Net's
        trainer and data loader timed as the full step, the step without data loading and the
        data loader alone, `steps` iterations each, in a child process (`env`: variables for it,
        such as nnUNet_n_proc_DA) with nnU-Net trainer class `trainer`; the epoch and the planned
        run it predicts."""
        ds = self._ds()
        if ds.preprocessed is None:
            raise UsageError(f"{ds.name} is not preprocessed: run nnUNetv2_plan_and_preprocess -d {ds.id} first")
        have = sorted({pc.name for pc in planned_configurations(ds.preprocessed) if pc.plans_file.stem == plans})
        if configuration not in have:
            raise UsageError(unknown("configuration", configuration, have, f"in {plans}.json of {ds.name}"))
        t0 = time.monotonic()
        m = probe(ds.preprocessed, configuration, plans=plans, device=device, steps=steps, val_steps=val_steps,
                  trainer=trainer, env=env, on_progress=on_progress)
        tp = judge(m, iterations_per_epoch=iterations_per_epoch, val_iterations=val_iterations, epochs=epochs)
        tp.seconds = time.monotonic() - t0
        try:                                      # the report shows the last verdict per configuration
            save_verdict(dataset_dir(ds, create=True), tp)
        except (OSError, UsageError):
            pass
        return tp

    def throughput_verdicts(self) -> list[dict]:
        """The last `throughput` verdict of each configuration of this dataset, as saved in this
        user's state folder (the report's training section shows them)."""
        return load_verdicts(dataset_dir(self._ds()))

    @staticmethod
    def plan_and_preprocess(raw: Path, preprocessed: Path, dataset_id: int, configurations=("2d",)) -> None:
        """nnU-Net's own nnUNetv2_plan_and_preprocess of one raw dataset (how the demo makes its data)."""
        plan_and_preprocess(Path(raw), Path(preprocessed), dataset_id, tuple(configurations))

    def __call__(self, preflight, call, patience: int | None = None, on_event=None):
        """The 0.3 `ws.train(...)` method (deprecated): `run`."""
        deprecated("train()", "ws.train.run()")
        return self.run(preflight, call, patience, on_event)
