"""What `dataguard splits`, repair and the TUI need about one dataset's folds, from a ScanResult.

Kept apart from splits.py (pure split arithmetic, no engine imports) so that the checks
can use splits.py without an import cycle; this module reads the scanner's views.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..checks.cases import case_labels
from ..checks.rawset import view_spec
from ..checks.splits import training_cases
from ..engine.layout import Dataset
from ..findings import Severity
from ..spec import MAX_SAID
from .folds import (
    NNUNET_FOLDS,
    SPLITS_NAME,
    SplitError,
    case_classes,
    class_heading,
    label_counts,
    label_table,
    load_splits,
    nnunet_default_split,
    plot_heatmap,
    quarantine_leftovers,
    rebalance,
    rebalance_grouped,
)


@dataclass
class SplitContext:
    """What `dataguard splits` needs about one dataset, taken from a (cheap, incremental) scan."""
    dataset: Dataset
    splits_path: Path
    cases: list[str]                      # training cases
    case_labels: dict[str, set[int]]      # every training case -> its classes; set() = none or unknown
    names: dict[int, str]                 # class key -> name (DatasetSpec.class_names)
    unknown: list[str] = field(default_factory=list)   # training cases without label information
    findings: list = field(default_factory=list)        # the scan's DG5xx findings
    errors: int = 0                                      # other error findings of the scan
    # region datasets only: region position -> the label values it is made of. Classes are then
    # regions (a case contains one when it holds any of its values); else plain label values.
    regions: dict[int, tuple[int, ...]] = field(default_factory=dict)
    groups: dict[str, str] | None = None                 # case -> patient (a remembered rule), for DG506
    # declared classes no training case holds, left out of `names` when there are more than a few
    # (a dataset.json of 2M labels: a table of 2M columns, a DataFrame of 10M rows)
    unseen: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)       # what the last rebalance had to give up

    # the fold arithmetic on this dataset, so that a face needs nothing but this object
    default_folds = NNUNET_FOLDS

    def current(self) -> list[dict[str, list[str]]]:
        """splits_final.json as it is (SplitError when malformed, OSError when unreadable)."""
        return load_splits(self.splits_path)

    def default_split(self) -> list[dict[str, list[str]]]:
        """The split nnU-Net writes at the first training when there is none."""
        return nnunet_default_split(self.cases)

    @property
    def kind(self) -> str:
        """What the columns are: "region" or "label"."""
        return "region" if self.regions else "label"

    def table(self, splits):
        """Folds x classes (pandas): training and validation cases holding each label or region."""
        return label_table(splits, self.case_labels, self.names)

    def heading(self, key: int) -> str:
        """A column's name: `2 left_ventricle`, or `tumor_core [2,3]` for a region."""
        return class_heading(int(key), self.names, self.regions)

    def counts(self) -> dict[int, int]:
        """Training cases holding each label (or region), over the whole dataset."""
        return label_counts(self.case_labels)

    def rebalanced(self, folds: int = 5, seed: int = 0):
        """Folds stratified so each validation set holds every label or region it can
        (SplitError if impossible). With patients (`groups`), each patient's cases share one
        validation set; what that costs the stratification is in `notes`."""
        self.notes = []
        if self.groups and len(set(self.groups.get(c, c) for c in self.cases)) < len(self.cases):
            splits, self.notes = rebalance_grouped(self.case_labels, self.groups, folds=folds, seed=seed,
                                                   names=self.names)
            return splits
        return rebalance(self.case_labels, folds=folds, seed=seed, names=self.names)

    def sweep_leftovers(self) -> list[str]:
        """Temp files of an interrupted splits write, moved to quarantine."""
        return quarantine_leftovers(self.splits_path)

    def plot(self, table, path: Path | str) -> Path:
        """The folds x labels table as a heat map (PNG)."""
        return plot_heatmap(table, path, self.regions)


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
    known = case_labels(view)                     # label values per case
    spec = view_spec(view)
    classes = case_classes({c: known.get(c, set()) for c in cases}, spec)
    names, unseen = spec.class_names, []
    held = set().union(*classes.values()) if classes else set()
    if sum(1 for k in names if k not in held) > MAX_SAID:
        unseen = [name for k, name in names.items() if k not in held]
        names = {k: name for k, name in names.items() if k in held}
    mine = [f for f in result.findings if f.dataset == dataset.name]
    return SplitContext(
        dataset=dataset, splits_path=Path(dataset.preprocessed) / SPLITS_NAME, cases=cases,
        case_labels=classes, names=names, unseen=unseen,
        regions={k: vals for k, (_, vals) in spec.classes.items() if k in names} if spec.has_regions else {},
        unknown=[c for c in cases if c not in known], groups=view.groups,
        findings=[f for f in mine if f.code.startswith("DG5")],
        errors=sum(1 for f in mine if f.severity == Severity.ERROR and not f.code.startswith("DG5")))
