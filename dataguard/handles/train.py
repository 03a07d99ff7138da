"""`ws.train` / `ws.dataset(name).train`: the training gate, training, and reading its logs."""
from __future__ import annotations

from pathlib import Path

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

    @staticmethod
    def plan_and_preprocess(raw: Path, preprocessed: Path, dataset_id: int, configurations=("2d",)) -> None:
        """nnU-Net's own nnUNetv2_plan_and_preprocess of one raw dataset (how the demo makes its data)."""
        plan_and_preprocess(Path(raw), Path(preprocessed), dataset_id, tuple(configurations))

    def __call__(self, preflight, call, patience: int | None = None, on_event=None):
        """The 0.3 `ws.train(...)` method (deprecated): `run`."""
        deprecated("train()", "ws.train.run()")
        return self.run(preflight, call, patience, on_event)
