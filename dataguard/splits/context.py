"""What `dataguard splits`, repair and the TUI need about one dataset's folds, from a ScanResult.

Kept apart from splits.py (pure split arithmetic, no engine imports) so that the checks
can use splits.py without an import cycle; this module reads the scanner's views.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..checks.cases import case_labels
from ..checks.splits import training_cases
from ..engine.layout import Dataset
from ..findings import Severity
from .folds import (
    NNUNET_FOLDS,
    SPLITS_NAME,
    SplitError,
    label_counts,
    label_names,
    label_table,
    load_splits,
    nnunet_default_split,
    plot_heatmap,
    quarantine_leftovers,
    rebalance,
)


@dataclass
class SplitContext:
    """What `dataguard splits` needs about one dataset, taken from a (cheap, incremental) scan."""
    dataset: Dataset
    splits_path: Path
    cases: list[str]                      # training cases
    case_labels: dict[str, set[int]]      # every training case; set() = no foreground or unknown
    names: dict[int, str]                 # label value -> name from dataset.json
    unknown: list[str] = field(default_factory=list)   # training cases without label information
    findings: list = field(default_factory=list)        # the scan's DG5xx findings
    errors: int = 0                                      # other error findings of the scan

    # the fold arithmetic on this dataset, so that a face needs nothing but this object
    default_folds = NNUNET_FOLDS

    def current(self) -> list[dict[str, list[str]]]:
        """splits_final.json as it is (SplitError when malformed, OSError when unreadable)."""
        return load_splits(self.splits_path)

    def default_split(self) -> list[dict[str, list[str]]]:
        """The split nnU-Net writes at the first training when there is none."""
        return nnunet_default_split(self.cases)

    def table(self, splits):
        """Folds x labels (pandas): training and validation cases holding each label."""
        return label_table(splits, self.case_labels, self.names)

    def counts(self) -> dict[int, int]:
        """Training cases holding each label, over the whole dataset."""
        return label_counts(self.case_labels)

    def rebalanced(self, folds: int = 5, seed: int = 0):
        """Folds stratified so each validation set holds every label it can (SplitError if impossible)."""
        return rebalance(self.case_labels, folds=folds, seed=seed)

    def sweep_leftovers(self) -> list[str]:
        """Temp files of an interrupted splits write, moved to quarantine."""
        return quarantine_leftovers(self.splits_path)

    @staticmethod
    def plot(table, path: Path | str) -> Path:
        """The folds x labels table as a heat map (PNG)."""
        return plot_heatmap(table, path)


def context_from_result(result, dataset: Dataset) -> SplitContext:
    """Training cases and labels of one dataset from an existing ScanResult (no second scan)."""
    if dataset.preprocessed is None:
        raise SplitError(f"{dataset.name} has no preprocessed folder: splits_final.json lives in "
                         f"nnUNet_preprocessed/{dataset.name}")
    view = result.views[dataset.name]
    cases = sorted(training_cases(view))
    if not cases:
        raise SplitError(f"{dataset.name} has no training cases (no raw labelsTr/imagesTr and no "
                         f"preprocessed cases)")
    known = case_labels(view)
    mine = [f for f in result.findings if f.dataset == dataset.name]
    return SplitContext(
        dataset=dataset, splits_path=Path(dataset.preprocessed) / SPLITS_NAME, cases=cases,
        case_labels={c: set(known.get(c, set())) for c in cases},
        names=label_names(view.meta.get("labels")),
        unknown=[c for c in cases if c not in known],
        findings=[f for f in mine if f.code.startswith("DG5")],
        errors=sum(1 for f in mine if f.severity == Severity.ERROR and not f.code.startswith("DG5")))
