"""DG501–DG504: the cross-validation splits nnU-Net will train with (splits_final.json).

nnU-Net reads only `nnUNet_preprocessed/DatasetXXX/splits_final.json` and writes an
unstratified KFold(5) one at first training when it is missing, so a missing file is
not a finding. The file is a few kB: reading it here costs nothing next to the scan.
"""
from __future__ import annotations

import heapq
import json

from ..findings import Finding, Fix, Severity, finding
from ..fsio import read_regular
from ..spec import MAX_SAID, bunched, clip, few
from ..errors import SplitError
from ..folds import NNUNET_FOLDS, case_classes, label_counts, nnunet_default_split
from .cases import DatasetView, case_labels
from .groups import patient_leaks
from .rawset import complete_cases, view_spec

PRE, RAW = "preprocessed/splits_final.json", "raw/splits_final.json"
# DG504 warning: a fold's validation share of a label below SHARE_LOW x or above
# SHARE_HIGH x its dataset-wide share, judged only where at least MIN_EXPECTED cases
# with the label are expected in that validation set (below that, one case more or
# less is noise, not imbalance).
SHARE_LOW, SHARE_HIGH, MIN_EXPECTED = 0.5, 2.0, 2.0


def training_cases(view: DatasetView) -> set[str]:
    """Training cases: the raw dataset's complete ones (every channel and a label; the rest are
    DG303 and nnU-Net cannot train on them), else those of the preprocessed configuration folders."""
    if view.has_raw and view.raw_cases():
        raw = complete_cases(view) & set(view.raw_cases())
        if raw:
            return raw
    return {case for cases in view.config_cases().values() for case in cases}


def check_splits(view: DatasetView) -> list[Finding]:
    """All DG5xx findings for the dataset's splits_final.json (none when there is none)."""
    files = {t.rel: t.path for t in view.tasks if t.rel in (PRE, RAW)}
    out = _raw_copy(files)
    if PRE not in files:
        return out + _predicted(view)
    splits = view.splits                  # read once per scan, shared with the case list
    if isinstance(splits, SplitError):
        return out + [finding("DG501", PRE, f"malformed: {splits}; nnU-Net cannot train from it",
                              fix=Fix.REGENERATE_SPLITS)]
    out += _duplicates(splits) + _leakage(splits)
    if view.groups:
        out += patient_leaks(splits, view.groups, PRE)
    cases = training_cases(view)
    if cases:
        out += _existence(splits, cases)
        out += _imbalance(splits, view, cases)
    return out


PREDICTED = "predicted default split: "


def is_predicted(f: Finding) -> bool:
    """A finding about the split nnU-Net has not written yet (DG505, predicted DG504)."""
    return f.code == "DG505" or (f.code == "DG504" and f.message.startswith(PREDICTED))


def _predicted(view: DatasetView) -> list[Finding]:
    """DG505 and the DG504 findings of the split nnU-Net will write at its first training.

    Only for a preprocessed dataset (where the file will be written) with at least 5
    training cases (fewer: nnU-Net's KFold fails at the start of training, DG507). The predicted
    split's DG504 are warnings: nothing is wrong on disk yet, but `dataguard train`
    refuses a fold that would validate without a label.
    """
    import dataclasses


    if view.preprocessed_root is None:
        return []
    cases = training_cases(view)
    if len(cases) < NNUNET_FOLDS:
        # counted from the raw dataset's complete cases; a preprocessed folder alone is left to
        # the train gate (fold_prereq.gate_findings), which knows the fold: 'all' needs no split
        return too_few_cases(view.name, len(cases)) if view.has_raw else []
    splits = nnunet_default_split(cases)
    out = [finding("DG505", PRE, f"no splits_final.json yet: nnU-Net will write its default "
                   f"{NNUNET_FOLDS}-fold split (KFold, seed 12345) over the {len(cases)} training cases at "
                   f"the first training; it is checked as if it existed (its DG504, if any, say 'predicted "
                   f"default split'); `dataguard splits rebalance` writes a stratified one", fix=Fix.REGENERATE_SPLITS)]
    for f in _imbalance(splits, view, cases) + (patient_leaks(splits, view.groups, PRE) if view.groups else []):
        out.append(dataclasses.replace(f, severity=min(f.severity, Severity.WARNING),
                                       message=PREDICTED + f.message))
    return out


TOO_FEW = "fewer training cases than folds"


def too_few_cases(dataset: str, n: int) -> list[Finding]:
    """DG507: no splits_final.json and fewer training cases than nnU-Net's 5 folds.

    nnU-Net's do_split then calls generate_crossval_split (sklearn's KFold(n_splits=5)) over
    the preprocessed cases at the start of training any numbered fold, and KFold raises
    "ValueError: Cannot have number of splits n_splits=5 greater than the number of samples".
    Fold 'all' uses no split and trains. No cases at all is DG305's business, not this one.
    """
    if n <= 0:
        return []
    fix = (f"dataguard splits rebalance -d {dataset} --folds {n} writes a {n}-fold split "
           f"nnU-Net reads instead" if n >= 2 else "add training cases (check their names: misnamed "
           "files look like fewer cases)")
    return [finding("DG507", PRE, f"{TOO_FEW}: {n} training case{'s' * (n != 1)} and no "
                    f"splits_final.json, so nnU-Net's default {NNUNET_FOLDS}-fold split fails when "
                    f"training any fold starts (KFold: n_splits={NNUNET_FOLDS} > n_samples={n}); "
                    f"fold 'all' needs no split", help=f"{fix}; or train fold all")]


def _raw_copy(files: dict[str, str]) -> list[Finding]:
    """DG501 warning: a raw/splits_final.json that is not what nnU-Net will use."""
    if RAW not in files:
        return []
    if PRE not in files:
        return [finding("DG501", RAW, "nnU-Net ignores this file: it reads only "
                        "preprocessed/splits_final.json, which does not exist, and will create an "
                        "unstratified 5-fold split there at first training", severity=Severity.WARNING,
                        fix=Fix.REGENERATE_SPLITS)]
    try:
        same = _content(files[RAW]) == _content(files[PRE])
    except RecursionError:      # absurdly nested JSON: compare as text would, i.e. "differs"
        same = False
    if same:
        return []
    return [finding("DG501", RAW, "differs from preprocessed/splits_final.json; nnU-Net uses the "
                    "preprocessed one, not this copy", severity=Severity.WARNING,
                    fix=Fix.REGENERATE_SPLITS)]


def _content(path: str):
    """Parsed JSON when possible (formatting does not matter), else the raw bytes."""
    try:
        data = read_regular(path)
    except OSError:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return data


def _duplicates(splits) -> list[Finding]:
    twice = []                                          # (fold, part, case) per repeated entry
    for i, fold in enumerate(splits):
        for part in ("train", "val"):
            seen: set[str] = set()
            for c in fold[part]:
                if c in seen:
                    twice.append((i, part, c))
                seen.add(c)
    return bunched(
        twice,
        lambda x: finding("DG501", PRE, f"fold {x[0]} lists case '{clip(x[2])}' twice in '{x[1]}'", case=x[2],
                          severity=Severity.WARNING, fix=Fix.REGENERATE_SPLITS),
        lambda xs: finding("DG501", PRE, f"{len(xs)} entries repeat a case already listed in the same fold's "
                           f"list: {few([f'fold {i} {part} {c}' for i, part, c in xs[:5]], len(xs))}",
                           severity=Severity.WARNING, fix=Fix.REGENERATE_SPLITS))


def _leakage(splits) -> list[Finding]:
    """DG502: a case trained and validated in one fold, or validated in two folds."""
    both = []                                           # (fold, case): in train and val of one fold
    first_val: dict[str, int] = {}                      # case -> the first fold validating it
    again: dict[str, list[int]] = {}                    # case -> every fold validating it, if 2+
    for i, fold in enumerate(splits):
        val = set(fold["val"])
        both += [(i, c) for c in sorted(set(fold["train"]) & val)]
        for c in val:
            j = first_val.setdefault(c, i)
            if j != i:
                again.setdefault(c, [j]).append(i)
    out = bunched(
        both,
        lambda x: finding("DG502", PRE, f"case '{clip(x[1])}' is in both train and val of fold {x[0]}: that "
                          f"fold validates on its own training data and its Dice is inflated",
                          case=x[1], fix=Fix.REGENERATE_SPLITS),
        lambda xs: finding("DG502", PRE, f"{len(xs)} cases are in both train and val of one fold (those folds "
                           f"validate on their own training data and their Dice is inflated): "
                           f"{few([f'{c} (fold {i})' for i, c in xs[:5]], len(xs))}", fix=Fix.REGENERATE_SPLITS))
    twice = sorted(again.items())
    out += bunched(
        twice,
        lambda x: finding("DG502", PRE, f"case '{clip(x[0])}' is in the validation sets of folds "
                          f"{_join(x[1])}: cross-validation predictions and the ensemble "
                          f"choice count it twice", case=x[0], fix=Fix.REGENERATE_SPLITS),
        lambda xs: finding("DG502", PRE, f"{len(xs)} cases are in the validation sets of two or more folds "
                           f"(cross-validation predictions and the ensemble choice count them twice): "
                           f"{few([c for c, _ in xs])}", fix=Fix.REGENERATE_SPLITS))
    return out


def _existence(splits, cases: set[str]) -> list[Finding]:
    """DG503: names that are not training cases; training cases never validated."""
    unknown: dict[str, None] = {}                       # names no training case has, in file order
    for fold in splits:
        for part in ("train", "val"):
            for c in fold[part]:
                if c not in cases:
                    unknown[c] = None
    if len(unknown) <= MAX_SAID:
        out = []
        for c in sorted(unknown):
            places = [f"fold {i} {part}" for i, fold in enumerate(splits) for part in ("train", "val")
                      if c in fold[part]]
            out.append(finding("DG503", PRE, f"case '{clip(c)}' ({', '.join(places)}) does not exist in the "
                               f"dataset: nnU-Net fails when it loads it", case=c, fix=Fix.REGENERATE_SPLITS))
    else:
        first = heapq.nsmallest(5, unknown)
        out = [finding("DG503", PRE, f"{len(unknown)} case names in the splits do not exist in the dataset "
                       f"(nnU-Net fails when it loads them): {few(first, len(unknown))}",
                       fix=Fix.REGENERATE_SPLITS)]
    del unknown
    validated = {c for fold in splits for c in fold["val"]}
    never = sorted(cases - validated)
    out += bunched(
        never,
        lambda c: finding("DG503", PRE, f"training case '{clip(c)}' is in no fold's validation set: it is "
                          f"never validated and cross-validation results leave it out",
                          case=c, fix=Fix.REGENERATE_SPLITS),
        lambda cs: finding("DG503", PRE, f"{len(cs)} of the {len(cases)} training cases are in no fold's "
                           f"validation set (never validated; cross-validation results leave them out): "
                           f"{few(cs)}", fix=Fix.REGENERATE_SPLITS))
    return out


def _imbalance(splits, view: DatasetView, cases: set[str]) -> list[Finding]:
    """DG504: a label missing from a fold's val/train set, or far from its dataset share.

    Counted per class (`folds.case_classes`): plain labels by value, the ignore label
    left out; with regions, a case contains a region when it holds any of its values.
    Only cases with known labels count (a case whose .pkl is unreadable is not assumed
    empty). A label in fewer cases than folds cannot be in every validation set: one
    warning suggesting fewer folds instead of an error per fold. The share warning:
    see SHARE_LOW, SHARE_HIGH, MIN_EXPECTED.
    """
    spec = view_spec(view)
    labels = case_classes({c: s for c, s in case_labels(view).items() if c in cases}, spec)
    if not labels:
        return []
    names, regions = spec.class_names, spec.classes if spec.has_regions else {}
    total = label_counts(labels)
    k, n = len(splits), len(labels)
    per_fold = []
    for fold in splits:
        tr, va = set(fold["train"]) & set(labels), set(fold["val"]) & set(labels)
        per_fold.append((label_counts(labels, tr), label_counts(labels, va), len(va)))
    out = []
    for lab, count in total.items():
        if lab in regions:
            name = f"region {names[lab]} (labels {', '.join(str(v) for v in regions[lab][1])})"
        else:
            name = f"label {lab} ({names.get(lab, 'unnamed')})"
        if count < k:
            out += _too_rare(lab, name, count, k, per_fold)
            continue
        for i, (tr, va, n_val) in enumerate(per_fold):
            out += _fold_imbalance(i, name, count, n, tr.get(lab, 0), va.get(lab, 0), n_val)
    return out


def _too_rare(lab: int, name: str, count: int, k: int, per_fold) -> list[Finding]:
    no_val = [i for i, (_, va, _) in enumerate(per_fold) if not va.get(lab)]
    no_train = [i for i, (tr, _, _) in enumerate(per_fold) if not tr.get(lab)]
    if not no_val and not no_train:
        return []
    advice = (f"use at most {count} folds to validate it in every fold" if count >= 2
              else "no split can validate it in more than one fold")
    parts = []
    if no_val:
        parts.append(f"{_folds(no_val)} validate{'s' * (len(no_val) == 1)} without it (Dice 0/NaN there)")
    if no_train:
        parts.append(f"{_folds(no_train)} train{'s' * (len(no_train) == 1)} without it")
    return [finding("DG504", PRE, f"{name} occurs in only {count} case{'s' * (count != 1)}, fewer than "
                    f"the {k} folds: {'; '.join(parts)}; {advice}", severity=Severity.WARNING,
                    fix=Fix.REGENERATE_SPLITS)]


def _fold_imbalance(i: int, name: str, count: int, n: int, tr: int, va: int, n_val: int) -> list[Finding]:
    fix = Fix.REGENERATE_SPLITS
    out = []
    if n_val and va == 0:
        out.append(finding("DG504", PRE, f"fold {i} validation has no case with {name}: its validation "
                           f"Dice for that label will be 0/NaN ({count} of {n} cases contain it)", fix=fix))
    if tr == 0:
        out.append(finding("DG504", PRE, f"fold {i} training has no case with {name}: that fold's model "
                           f"never learns it ({count} of {n} cases contain it)", fix=fix))
    expected = n_val * count / n
    if va and expected >= MIN_EXPECTED and not SHARE_LOW * expected <= va <= SHARE_HIGH * expected:
        out.append(finding("DG504", PRE, f"fold {i} validation: {name} in {va} of {n_val} cases "
                           f"({va / n_val:.0%}) vs {count / n:.0%} of all cases (about {expected:.1f} "
                           f"expected); that fold's score for it is not comparable",
                           severity=Severity.WARNING, fix=fix))
    return out


def _folds(items) -> str:
    return f"fold{'s' * (len(items) > 1)} {_join(items)}"


def _join(items) -> str:
    items = [str(x) for x in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
