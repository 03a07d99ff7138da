"""The one read-only model of `splits_final.json`: read and validate it, count labels per fold,
and nnU-Net's own default split.

Vocabulary, beside `spec` (the model of dataset.json): the checks, the engine, the features and
the faces all read folds through here, and it imports nothing of them. The solver that makes
stratified splits, the journalled writer and the plot live in `dataguard.splits.folds`
(which re-exports these names). numpy and pandas are imported inside the functions that need them.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import SplitError
from .fsio import read_regular
from .spec import parse_spec

SPLITS_NAME = "splits_final.json"


# --- reading and validating ------------------------------------------------------------------
def structure_problems(data) -> list[str]:
    """Why `data` is not what nnU-Net expects: a list of {"train": [str], "val": [str]}."""
    if not isinstance(data, list):
        return [f"top level is a JSON {_json_type(data)}, not a list of folds"]
    if not data:
        return ["the list of folds is empty"]
    out = []
    for i, fold in enumerate(data):
        if not isinstance(fold, dict) or "train" not in fold or "val" not in fold:
            out.append(f"fold {i} is not an object with 'train' and 'val' lists")
            continue
        for part in ("train", "val"):
            items = fold[part]
            if not isinstance(items, list):
                out.append(f"fold {i} '{part}' is a JSON {_json_type(items)}, not a list of case names")
            elif not items:
                out.append(f"fold {i} has an empty '{part}' list")
            elif any(not isinstance(c, str) for c in items):
                bad = next(c for c in items if not isinstance(c, str))
                out.append(f"fold {i} '{part}' holds {json.dumps(bad)}, not a case name string")
    return out


def _json_type(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean",
            type(None): "null"}.get(type(value), "number")


def parse_splits(text: str) -> list[dict[str, list[str]]]:
    """Parse and validate the text of a splits file; SplitError says what is wrong."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise SplitError("invalid JSON: nested too deeply to load") from None
    except ValueError as e:
        raise SplitError(f"invalid JSON: {e}") from None
    problems = structure_problems(data)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise SplitError(problems[0] + more)
    return data


def load_splits(path: Path | str) -> list[dict[str, list[str]]]:
    """Read and validate a splits_final.json (a FIFO or device named so is refused, not read)."""
    try:
        raw = read_regular(path)
    except OSError as e:
        raise SplitError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SplitError("not UTF-8 text") from None
    return parse_splits(text)


# --- label names and counts ------------------------------------------------------------------
# Folds count *classes*, what nnU-Net scores (`DatasetSpec.classes`): plain labels keyed by their
# value, regions (BraTS' "whole_tumor": [1, 2, 3]) by their 1-based position. The per-case facts
# hold label values; `case_classes` turns them into classes where the counts are made, so a plain
# dataset counts exactly as before and a region dataset counts regions. The ignore label
# (sparse annotations) is never a class.
def label_names(meta_labels) -> dict[int, str]:
    """{class key: name} for dataset.json's `labels` (`{"name": value}`), as DatasetSpec reads
    them: plain foreground labels by value, regions by position; background and ignore left out."""
    return parse_spec({"labels": meta_labels}).class_names


def classes_of(values, spec) -> set[int]:
    """The class keys of a label map holding `values`: with regions, each region any of whose
    values is there (`spec.present_classes`); else the foreground values themselves (undeclared
    ones included, as before: other checks report them), the ignore label left out."""
    if spec.has_regions:
        return spec.present_classes(int(v) for v in values)
    ig = spec.ignore_label
    return {int(v) for v in values if int(v) > 0 and int(v) != ig}


def case_classes(case_values: dict[str, set[int]], spec) -> dict[str, set[int]]:
    """{case: class keys} from {case: label values} (see `classes_of`)."""
    return {c: classes_of(vals, spec) for c, vals in case_values.items()}


def class_shares(value_sets, spec) -> dict[int, float]:
    """Share of the label maps (each given as the set of values it holds) containing each class:
    DG605's reference, keyed like `spec.classes`."""
    value_sets = list(value_sets)
    counts: dict[int, int] = {}
    for vals in value_sets:
        for k in classes_of(vals, spec):
            counts[k] = counts.get(k, 0) + 1
    return {k: n / len(value_sets) for k, n in sorted(counts.items())} if value_sets else {}


def class_heading(key: int, names: dict[int, str], regions: dict[int, tuple[int, ...]] | None = None) -> str:
    """How a face names a class in a column: `2 left_ventricle` for a plain label (key = value);
    with `regions` (key -> values, region datasets only) `tumor_core [2,3]`: a region's position
    is no label value, so it is not shown."""
    name = names.get(key, str(key))
    if regions and key in regions:
        return f"{name} [{','.join(str(v) for v in regions[key])}]"
    return f"{key} {name}"


def label_counts(case_labels: dict[str, set[int]], cases=None) -> dict[int, int]:
    """How many of `cases` (default: all) contain each foreground label."""
    out: dict[int, int] = {}
    for c in (case_labels if cases is None else cases):
        for lab in case_labels.get(c, ()):
            out[lab] = out.get(lab, 0) + 1
    return dict(sorted(out.items()))


def fold_label_counts(splits, case_labels: dict[str, set[int]]) -> list[dict[int, tuple[int, int]]]:
    """Per fold, {label: (train cases containing it, val cases containing it)}.

    Pure Python so the scan-time check does not pay for importing pandas. Each case
    counts once per set even if listed twice; cases without label information count
    as containing nothing.
    """
    labels = sorted({lab for s in case_labels.values() for lab in s})
    out = []
    for fold in splits:
        tr = label_counts(case_labels, set(fold["train"]))
        va = label_counts(case_labels, set(fold["val"]))
        out.append({lab: (tr.get(lab, 0), va.get(lab, 0)) for lab in labels})
    return out


def label_table(splits, case_labels: dict[str, set[int]], labels: dict[int, str]):
    """A pandas DataFrame, one row per (fold, foreground label).

    Columns: fold, label, name, train, val (cases containing the label), n_train, n_val
    (cases in the fold's sets). `case_labels` holds class keys (`case_classes`) and `labels`
    maps them to names (`label_names`, `DatasetSpec.class_names`); keys that occur in cases
    but are not named there are included under their number.
    """
    import pandas as pd

    values = sorted(set(labels) | {lab for s in case_labels.values() for lab in s})
    rows = []
    for i, (fold, counts) in enumerate(zip(splits, fold_label_counts(splits, case_labels))):
        n_train, n_val = len(set(fold["train"])), len(set(fold["val"]))
        for lab in values:
            tr, va = counts.get(lab, (0, 0))
            rows.append({"fold": i, "label": lab, "name": labels.get(lab, str(lab)),
                         "train": tr, "val": va, "n_train": n_train, "n_val": n_val})
    cols = ["fold", "label", "name", "train", "val", "n_train", "n_val"]
    return pd.DataFrame(rows, columns=cols).astype(
        {"fold": int, "label": int, "train": int, "val": int, "n_train": int, "n_val": int})


def coverage_gaps(splits, case_labels: dict[str, set[int]]) -> list[tuple[int, int]]:
    """(fold, label) pairs where a label found in >= folds cases is missing from val."""
    k = len(splits)
    counts = label_counts(case_labels)
    out = []
    for i, per_label in enumerate(fold_label_counts(splits, case_labels)):
        out += [(i, lab) for lab, (_, va) in per_label.items() if counts[lab] >= k and va == 0]
    return out


# --- nnU-Net's default split -----------------------------------------------------------------
NNUNET_SEED, NNUNET_FOLDS = 12345, 5


def nnunet_default_split(cases, seed: int = NNUNET_SEED, folds: int = NNUNET_FOLDS) -> list[dict[str, list[str]]]:
    """The split nnU-Net writes at the first training when splits_final.json is missing.

    nnunetv2.utilities.crossval_split: KFold(n_splits=5, shuffle=True, random_state=12345)
    over the sorted case identifiers. Reproduced with numpy's RandomState exactly as
    scikit-learn shuffles (a test compares it with nnunetv2's own function), so it can be
    checked before it exists without importing scikit-learn.
    """
    import numpy as np

    cases = sorted(cases)
    n = len(cases)
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    out, start = [], 0
    for i in range(folds):
        size = n // folds + (1 if i < n % folds else 0)
        val = np.zeros(n, bool)
        val[order[start:start + size]] = True
        start += size
        out.append({"train": [cases[j] for j in np.nonzero(~val)[0]], "val": [cases[j] for j in np.nonzero(val)[0]]})
    return out


def fold_sizes(n: int, folds: int) -> list[int]:
    """Validation set sizes: n // folds each, the first n % folds folds one more.

    Which folds get the extra case does not matter for feasibility: every constraint
    treats folds alike, so any solution can be relabelled to put the big folds first.
    """
    q, r = divmod(n, folds)
    return [q + 1] * r + [q] * (folds - r)
