"""Per-label ensemble weights from out-of-fold probabilities, instead of trial uploads.

Every model's `fold_X/validation/*.npz` (nnU-Net `--npz`) holds probabilities for the cases
that fold did not train on; over all folds, each case once. On the cases all models share,
the search scores candidate weight vectors (a simplex grid, step 0.1 by default, plus equal
weights) by the out-of-fold Dice of the weighted argmax (`ensemble.combine`'s rule).

Labels are coupled: a voxel goes to the class with the highest weighted probability, so
changing label c's weights can move voxels between c and any other class. The search is
coordinate ascent: starting from equal weights, it sets one label's weights at a time to the
candidate that maximises the mean foreground Dice with the other labels' weights fixed
(ties keep the current weights), and repeats until a full round changes nothing (at most
`rounds`). Each step can only raise the objective, so the result is never worse than equal
weights on the data it was chosen on. Only the class c column changes within a step, so the
other classes' maximum is computed once per step and each candidate costs one weighted sum.
Background keeps equal weights.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..submit.archive import run_checks
from ..submit.ensemble import combine, read_probabilities
from ..submit.predictions import find_probabilities
from .crossval import overlap


@dataclass
class WeightCheck:
    """What DG803 judges: weights per label and model, and each model's out-of-fold Dice."""
    source: str
    weights: dict[int, dict[str, float]]
    oof: dict[str, dict[int, float | None]]
    names: dict[int, str]


@dataclass
class OOF:
    models: list[str]
    labels: dict[int, str]
    cases: list[str]
    probs: dict[str, list] = field(default_factory=dict)     # case -> [model probabilities (C, ...)]
    refs: dict[str, object] = field(default_factory=dict)    # case -> reference label array (same space)
    missing: dict[str, list[str]] = field(default_factory=dict)   # model -> folds without probabilities


def simplex(n_models: int, step: float = 0.1) -> list[tuple[float, ...]]:
    k = round(1 / step)
    if abs(k * step - 1) > 1e-9 or k < 1:
        raise UsageError(f"--step must divide 1 (0.1, 0.25, 0.5), not {step}")
    out = [tuple(c / k for c in combo) for combo in itertools.product(range(k + 1), repeat=n_models)
           if sum(combo) == k]
    eq = tuple(1 / n_models for _ in range(n_models))
    if not any(all(abs(a - b) < 1e-9 for a, b in zip(eq, c)) for c in out):
        out.append(eq)
    return out


def _dice_per_label(segs: list, refs: list, labels: list[int]) -> dict[int, float | None]:
    """Mean Dice per label over the cases whose reference has it (evaluate's rule)."""

    sums: dict[int, list[float]] = {lab: [] for lab in labels}
    for seg, ref in zip(segs, refs):
        for lab, (tp, r, p) in overlap(ref, seg, labels).items():
            if r:
                sums[lab].append(2 * tp / (r + p))
    return {lab: (sum(v) / len(v) if v else None) for lab, v in sums.items()}


def _objective(d: dict[int, float | None]) -> float:
    vals = [v for v in d.values() if v is not None]
    return sum(vals) / len(vals) if vals else 0.0


@dataclass
class Suggestion:
    models: list[str]
    labels: dict[int, str]
    weights: dict[int, tuple[float, ...]]                  # label -> weight per model
    equal: dict[int, float | None]                         # Dice per label with equal weights
    chosen: dict[int, float | None]                        # Dice per label with the chosen weights
    single: dict[str, dict[int, float | None]]             # each model alone
    table: dict[int, list[tuple[tuple[float, ...], float | None]]]   # label -> (candidate, its Dice)
    cases: int = 0
    rounds: int = 0

    def weights_file(self) -> dict:
        return {"labels": {str(lab): {m: round(w, 4) for m, w in zip(self.models, ws)}
                           for lab, ws in sorted(self.weights.items())}}

    def to_dict(self) -> dict:
        return {"models": self.models, "cases": self.cases, "rounds": self.rounds,
                "weights": self.weights_file(),
                "labels": {self.labels[lab]: {"equal": self.equal[lab], "chosen": self.chosen[lab],
                                              "gain": None if self.equal[lab] is None or self.chosen[lab] is None
                                              else self.chosen[lab] - self.equal[lab],
                                              "single": {m: self.single[m][lab] for m in self.models},
                                              "candidates": [{"weights": dict(zip(self.models, c)), "dice": d}
                                                             for c, d in self.table[lab]]}
                           for lab in self.labels},
                "mean_equal": _objective(self.equal), "mean_chosen": _objective(self.chosen)}


def search(oof: OOF, step: float = 0.1, rounds: int = 3, on_step=None) -> Suggestion:
    import numpy as np


    models, labels = oof.models, list(oof.labels)
    cases = [c for c in oof.cases if c in oof.probs and c in oof.refs]
    if not cases:
        raise UsageError("no case has out-of-fold probabilities from every model and a reference")
    probs = [[p.astype(np.float32, copy=False) for p in oof.probs[c]] for c in cases]
    refs = [np.asarray(oof.refs[c]).astype(np.int64) for c in cases]
    n_classes = probs[0][0].shape[0]
    W = np.ones((len(models), n_classes))

    def segs_for(Wm):
        return [combine(ps, Wm)[0] for ps in probs]

    equal = _dice_per_label(segs_for(W), refs, labels)
    single = {}
    for m, name in enumerate(models):
        onehot = np.full((len(models), n_classes), 1e-9)
        onehot[m] = 1.0
        single[name] = _dice_per_label(segs_for(onehot), refs, labels)
    cands = simplex(len(models), step)
    table: dict[int, list] = {}
    done_rounds = 0
    for _ in range(rounds):
        done_rounds += 1
        changed = False
        for c in labels:
            # everything but class c is fixed: its best competitor per voxel, once
            fixed = []
            for ps in probs:
                _, acc = combine(ps, W)
                acc[c] = -np.inf
                fixed.append((acc.max(0), acc.argmax(0)))
            current = tuple(W[:, c] / W[:, c].sum())
            best_key, best_w, rows = None, current, []
            for cand in [current] + cands:
                w = np.asarray(cand, dtype=np.float32)
                if w.sum() <= 0:
                    continue
                w = w / w.sum()
                segs = []
                for ps, (omax, oarg) in zip(probs, fixed):
                    pc = sum(float(w[m]) * p[c] for m, p in enumerate(ps))
                    wins = (pc > omax) | ((pc == omax) & (c < oarg))
                    segs.append(np.where(wins, c, oarg))
                d = _dice_per_label(segs, refs, labels)
                if cand is not current:
                    rows.append((tuple(float(x) for x in cand), d[c]))
                key = (round(_objective(d), 12), round(d[c] or 0.0, 12))
                if best_key is None or key > best_key:
                    best_key, best_w = key, tuple(float(x) for x in w)
            table[c] = rows
            if any(abs(a - b) > 1e-9 for a, b in zip(best_w, current)):
                W[:, c] = best_w
                changed = True
            if on_step:
                on_step(c)
        if not changed:
            break
    chosen = _dice_per_label(segs_for(W), refs, labels)
    weights = {c: tuple(float(x) for x in W[:, c] / W[:, c].sum()) for c in labels}
    return Suggestion(models, oof.labels, weights, equal, chosen, single, table, len(cases), done_rounds)


def load_oof(model_folds: dict[str, dict[int, Path]], gt_dir: Path, labels: dict[int, str],
             reader=None, on_case=None) -> OOF:
    """Out-of-fold probabilities (fold_X/validation/*.npz) of each model and the references,
    read with nnU-Net's own reader so both are in the same array space."""

    models = list(model_folds)
    oof = OOF(models, labels, [])
    per_model: dict[str, dict] = {}
    for m, folds in model_folds.items():
        files = {}
        for k, folder in sorted(folds.items()):
            got = find_probabilities(folder)
            if not got:
                oof.missing.setdefault(m, []).append(str(k))
            files.update(got)
        per_model[m] = files
    if oof.missing:
        return oof
    shared = sorted(set.intersection(*[set(f) for f in per_model.values()]))
    oof.cases = [c for c in shared if (gt_dir / f"{c}.nii.gz").is_file() or reader is not None]
    for c in oof.cases:
        oof.probs[c] = [read_probabilities(per_model[m][c].npz) for m in models]
        ref = _read_ref(gt_dir, c, reader)
        if ref is not None:
            oof.refs[c] = ref
        if on_case:
            on_case(c)
    return oof


def _read_ref(gt_dir: Path, case: str, reader):
    hits = sorted(gt_dir.glob(f"{case}.*"))
    if not hits:
        return None
    if reader is None:
        import SimpleITK as sitk

        return sitk.GetArrayFromImage(sitk.ReadImage(str(hits[0])))
    seg, _ = reader.read_seg(str(hits[0]))
    return seg[0]


def check_weights(weights, oof_dice: dict[str, dict[int, float | None]], names: dict[int, str], source: str):
    """DG803 findings for a Weights object (ensemble.Weights) against out-of-fold Dice."""

    per = {}
    for lab in names:
        d = weights.per_label.get(lab, weights.default)
        per[lab] = dict(d) if d is not None else {m: 1.0 for m in oof_dice}
    return run_checks(WeightCheck(source, per, oof_dice, names), "weights")


def fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
