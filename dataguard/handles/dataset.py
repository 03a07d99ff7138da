"""`ws.dataset(name)`: one dataset and the feature objects that work on it."""
from __future__ import annotations

from pathlib import Path

from ..audit.models import audit_models
from ..checks.consistency import summary as consistency_summary
from ..checks.label_audit import audit_view, findings_of
from ..checks.roundtrip import table as roundtrip_table
from ..engine.caseinfo import case_infos
from ..engine.layout import nnunet_env, planned_configurations, results_root
from ..engine.slices import SliceError, config_slice, raw_slice
from ..engine.walk import file_ending, load_dataset_json
from ..spec import parse_spec
from .evaluate import Evaluation
from .repair import Repairs
from .splits import Splits
from .submit import Submission
from .train import Training


class DatasetHandle:
    """One dataset of a Workspace (`ws.dataset("Dataset001_Heart")`, by name, id or None for
    the only one). Its folders read as a layout.Dataset's (`name`, `id`, `raw`,
    `preprocessed`, `config_dirs`; the object itself is `layout`); `.splits`, `.repair`,
    `.train`, `.evaluate` and `.submit` own the methods that work on it."""

    def __init__(self, ws, ds):
        self._ws = ws
        self.layout = ds            # the layout.Dataset

    def __repr__(self) -> str:
        return f"<DatasetHandle {self.name}>"

    # --- the folders -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.layout.name

    @property
    def id(self) -> int | None:
        return self.layout.id

    @property
    def raw(self) -> Path | None:
        return self.layout.raw

    @property
    def preprocessed(self) -> Path | None:
        return self.layout.preprocessed

    @property
    def config_dirs(self) -> list[Path]:
        return self.layout.config_dirs

    @property
    def manifest_path(self) -> Path:
        """Its manifest file: in this user's state folder (or the Workspace's `manifest_dir`)."""
        return self._ws._manifest_home(self.layout) / f"{self.name}.json"

    @property
    def results(self) -> Path | None:
        """Its folder under nnUNet_results (beside its tree, else `$nnUNet_results`), or None."""
        return self.layout.results

    def results_root(self) -> tuple[Path | None, str]:
        """(the nnUNet_results folder its models are in, or None; where, or why none, in words)."""
        return results_root(self.layout)

    def planned_configurations(self) -> list:
        """The configurations this dataset's plans files declare (layout.PlannedConfig: plans,
        name, data folder); none before preprocessing. OSError: a plans file is unreadable."""
        return planned_configurations(self.preprocessed) if self.preprocessed is not None else []

    def nnunet_env(self):
        """A context in which nnU-Net's variables that are unset name this dataset's roots
        (a project folder used without them); restored when it ends."""
        return nnunet_env(self.layout)

    # --- the features ------------------------------------------------------------------------
    @property
    def splits(self) -> Splits:
        return Splits(self._ws, self.name)

    @property
    def repair(self) -> Repairs:
        return Repairs(self._ws, self.name)

    @property
    def train(self) -> Training:
        return Training(self._ws, self.name)

    @property
    def evaluate(self) -> Evaluation:
        return Evaluation(self._ws, self.name)

    @property
    def submit(self) -> Submission:
        return Submission(self._ws, self.name)

    # --- cases and what a face shows of them -------------------------------------------------
    def cases(self) -> list:
        """Every case of this dataset (raw and every configuration), from the latest scan."""
        return case_infos(self._ws._result(), self.name)

    def case(self, case: str):
        """One case (engine.caseinfo.CaseInfo); UsageError when there is none."""
        return self._ws.case(self.name, case)

    def load_slice(self, case: str, axis: int = 0, index: int | None = None, source: str = "raw",
                   config: str | None = None):
        """(image_2d float32, label_2d int or None) in (z, y, x) order; middle slice by default.

        source: "raw" (imagesTr channel 0 + labelsTr) or "preprocessed" (config: the
        configuration folder, default the first one holding the case).
        """
        ds = self.layout
        if source == "raw":
            if ds.raw is None:
                raise SliceError(f"{ds.name} has no raw folder")
            return raw_slice(ds.raw, case, file_ending(load_dataset_json(ds)), axis, index)
        if source != "preprocessed":
            raise SliceError("source must be 'raw' or 'preprocessed'")
        folders = [c for c in ds.config_dirs if config is None or c.name == config]
        for folder in folders:
            if any(folder.glob(f"{case}.*")):
                return config_slice(folder, case, axis, index)
        raise SliceError(f"case {case} not found in {config or 'any configuration folder'} of {ds.name}")

    def label_names(self) -> dict[int, str]:
        """{label value: name} from dataset.json (region labels by first value)."""
        return parse_spec(load_dataset_json(self.layout) or {}).foreground_names

    def dataset_json(self) -> Path | None:
        """The dataset.json that declares the labels: raw's, else preprocessed's."""
        for root in (self.raw, self.preprocessed):
            if root is not None and (Path(root) / "dataset.json").is_file():
                return Path(root) / "dataset.json"
        return None

    def roundtrip(self) -> list[dict]:
        """DG405's table: per planned configuration x label, the round-trip Dice of the raw
        training labels (checks.roundtrip.table: mean, worst and its case, components lost)."""
        ds = self.layout
        if ds.raw is None or ds.preprocessed is None:
            return []
        view = self._ws._scan_dataset(ds).views.get(ds.name)
        return [] if view is None else roundtrip_table(view)

    def audit(self, models: list[str] | None = None, on_case=None):
        """Which annotations look wrong: (data-alone suspects, with-models suspects, findings),
        each list ranked, most suspect first (suspects.Suspect). The data-alone audit
        reads the raw training cases (bounded); with `models` (`--model` specs) the models'
        out-of-fold probabilities are read as `ensemble suggest` reads them."""
        ds = self.layout
        data, found = [], []
        if ds.raw is not None:
            view = self._ws._scan_dataset(ds).views.get(ds.name)
            if view is not None:
                data = audit_view(view)
                found += findings_of(data, ds.name)
        with_models = []
        if models:
            with_models, more = audit_models(self.evaluate, models, on_case=on_case)
            found += more
        return data, with_models, found

    def consistency(self) -> dict | None:
        """Orientation, per-channel intensity and test-vs-training spacing of the raw images, as
        the report draws them (checks.consistency.summary); None without raw images."""
        ds = self.layout
        if ds.raw is None:
            return None
        view = self._ws._scan_dataset(ds).views.get(ds.name)
        return None if view is None else consistency_summary(view)

