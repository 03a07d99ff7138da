"""Per-label ensemble weights from out-of-fold probabilities, instead of trial uploads.

Every model's `fold_X/validation/*.npz` (nnU-Net `--npz`) holds probabilities for the cases
that fold did not train on; over all folds, each case once. On the cases all models share,
the search scores weights by the out-of-fold Dice of the weighted argmax (`ensemble.combine`'s
rule, bit for bit), mean over the foreground labels: the number `dataguard evaluate` reports.

**Never below nnU-Net's own choice.** `nnUNetv2_find_best_configuration` picks the best of each
model alone and the equal-weight ensembles of model pairs. The search scores all of those
(every subset of the models with equal weights, each model alone included), starts from the
best, and only ever moves to weights that score higher, so what it suggests is at least as
good, out of fold, as every candidate nnU-Net would consider.

**Coordinate ascent.** A voxel goes to the class with the highest weighted probability, so the
classes are coupled. Every class is a coordinate, background included: one class's weights
at a time are set to the simplex-grid point (step 0.1 by default) that maximises the mean
foreground Dice with the other classes' weights fixed (ties keep the current weights), until
a round changes nothing (at most `rounds`).

**Bounded memory, exact.** Weights are per class and normalised per class (combine divides by
their sum), so a class's ensemble score is a convex combination of the models' probabilities
for it: between their minimum and their maximum. Where the smallest probability any model gives
class c* exceeds the largest any model gives any other class, c* wins under every weight
vector. Such a voxel is *fixed*: it adds the same counts to every candidate's Dice, and is kept
as counts only. Each case is read once and reduced to its fixed counts plus the contested
voxels, the only ones the search looks at; memory then holds a few cases' probabilities at a
time plus the contested voxels (spilled to a temporary file past `memory_budget`). A margin of
1e-6 over float32 rounding (a few units in the last place of a sum of a handful of
probabilities <= 1) keeps the rule exact in floating point; `search(..., prune=False)` runs the
same search over every voxel and tests compare both. See docs/commands/ensemble.md.
"""
from __future__ import annotations

import itertools
import math
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..findings import Finding, finding
from ..submit.archive import run_checks
from ..submit.ensemble import Weights, read_probabilities
from ..submit.predictions import find_probabilities
from .gain import Gain, paired_bootstrap, per_case_dice

PRUNE_MARGIN = 1e-6                 # above float32 rounding of a weighted mean of probabilities <= 1
MEMORY_BUDGET = 512 << 20           # bytes of contested voxels kept in memory before spilling to disk
SELECTION = "model selection needs --npz probabilities of every fold"


@dataclass
class WeightCheck:
    """What DG803 judges: weights per label and model, and each model's out-of-fold Dice."""
    source: str
    weights: dict[int, dict[str, float]]
    oof: dict[str, dict[int, float | None]]
    names: dict[int, str]


# --- one case, reduced ------------------------------------------------------------------------
@dataclass
class CaseVoxels:
    """A case as the search needs it: reference voxels per class, what the fixed voxels add
    (true positives and predictions per class), and the contested voxels themselves."""
    case: str
    ref_counts: object               # (C,) int64: reference voxels per class
    fixed_tp: object                 # (C,) int64: fixed voxels predicted c whose reference is c
    fixed_pred: object               # (C,) int64: fixed voxels predicted c
    probs: object                    # (M, C, n) contested probabilities, the files' dtype
    ref: object                      # (n,) reference class of each contested voxel
    voxels: int = 0

    @property
    def contested(self) -> int:
        return int(self.ref.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.probs.nbytes + self.ref.nbytes)


def _fixed_class(raw: list):
    """(fixed mask, winning class) per voxel of the models' (C, V) probabilities.

    Fixed where some class c* has lo[c*] > max over c != c* of hi[c] (lo, hi: the smallest and
    largest probability any model gives a class). Such a c* is the class of the largest lo, and
    hi[c*] is then the unique largest hi, so the test is `max(lo) > second largest hi`: a few
    elementwise passes over the rows. float16 files (nnU-Net's --npz) are compared as their
    bit patterns, whose order is the numbers' order for values >= 0 (no float conversion of the
    arrays); a file holding a negative, inf or nan value takes the float32 path."""
    import numpy as np

    if raw[0].dtype == np.float16 and all(a.dtype == np.float16 for a in raw):
        bits = [a.view(np.uint16) for a in raw]
        if not any((b >= 0x7C00).any() for b in bits):          # sign bit, inf or nan: none
            lo_max, t2, lo = _top(bits, np.uint16(0))
            fixed = lo_max > t2
            fixed &= lo_max.view(np.float16).astype(np.float32) > t2.view(np.float16).astype(np.float32) \
                + np.float32(PRUNE_MARGIN)
            return fixed, _argmax_where(lo, lo_max)
    flat = [a.astype(np.float32, copy=False) for a in raw]
    lo_max, t2, lo = _top(flat, np.float32(-np.inf))
    return lo_max > t2 + np.float32(PRUNE_MARGIN), _argmax_where(lo, lo_max)


def _top(arrays: list, floor):
    """(largest lo, second largest hi, lo) over classes, with lo/hi over models."""
    import numpy as np

    lo, hi = arrays[0].copy(), arrays[0].copy()
    for a in arrays[1:]:
        np.minimum(lo, a, out=lo)
        np.maximum(hi, a, out=hi)
    lo_max = lo[0].copy()
    t1, t2 = hi[0].copy(), np.full_like(hi[0], floor)
    for c in range(1, lo.shape[0]):
        np.maximum(lo_max, lo[c], out=lo_max)
        np.maximum(t2, np.minimum(t1, hi[c]), out=t2)
        np.maximum(t1, hi[c], out=t1)
    return lo_max, t2, lo


def _argmax_where(lo, lo_max):
    """The class holding lo_max (unique where the voxel is fixed)."""
    import numpy as np

    star = np.zeros(lo_max.shape, dtype=np.uint8 if lo.shape[0] <= 256 else np.int64)
    for c in range(1, lo.shape[0]):
        star[lo[c] == lo_max] = c
    return star


def reduce_case(case: str, probabilities: list, ref, prune: bool = True, ignore: int | None = None) -> CaseVoxels:
    """One case's model probabilities (C, ...) and reference to fixed counts + contested voxels.
    Voxels whose reference is `ignore` count nowhere (nnU-Net masks them out of Dice)."""
    import numpy as np

    n_classes = probabilities[0].shape[0]
    raw = [p.reshape(n_classes, -1) for p in probabilities]                 # the files' dtype
    r = np.asarray(ref).reshape(-1)
    if r.shape[0] != raw[0].shape[1] or any(a.shape != raw[0].shape for a in raw):
        raise UsageError(f"case {case}: the reference has {r.shape[0]} voxels, the probabilities "
                         f"{[a.shape for a in raw]}: not the same image")
    voxels = int(r.shape[0])
    if ignore is not None and (r == ignore).any():
        valid = r != ignore
        raw = [a[:, valid] for a in raw]
        r = r[valid]
    if r.dtype.kind not in "ui":
        r = r.astype(np.int64)
    if r.dtype.kind == "i" and r.size and r.min() < 0:
        r = np.where(r < 0, n_classes, r)                 # no class: counted nowhere, like the ignore label
    ref_counts = np.bincount(r, minlength=n_classes)[:n_classes]
    if prune:
        fixed, star = _fixed_class(raw)
    else:
        star = np.zeros(r.shape[0], dtype=np.uint8)
        fixed = np.zeros(r.shape[0], dtype=bool)
    pred_f = star[fixed]
    fixed_pred = np.bincount(pred_f, minlength=n_classes)
    fixed_tp = np.bincount(star[fixed & (star == r)], minlength=n_classes)
    keep = ~fixed
    probs = np.stack([a[:, keep] for a in raw]) if keep.any() else np.zeros((len(raw), n_classes, 0), raw[0].dtype)
    return CaseVoxels(case, ref_counts, fixed_tp, fixed_pred, probs,
                      r[keep].astype(np.int16 if n_classes < 32000 else np.int64), voxels=voxels)


# --- every case, reduced ------------------------------------------------------------------------
@dataclass
class OOF:
    """Out-of-fold data of the models on the cases they share. `probs`/`refs` hold arrays when
    built in memory (tests, small data); `load_oof` streams the files into `reduced` instead."""
    models: list[str]
    labels: dict[int, str]
    cases: list[str]
    probs: dict[str, list] = field(default_factory=dict)     # case -> [model probabilities (C, ...)]
    refs: dict[str, object] = field(default_factory=dict)    # case -> reference label array (same space)
    missing: dict[str, list[str]] = field(default_factory=dict)   # model -> folds without probabilities
    reduced: "VoxelStore | None" = None
    ignore: int | None = None        # reference value that counts nowhere
    rule: object | None = None       # region_weights.RegionRule for a region-based dataset
    checkpoint: str = "final"        # the checkpoint that made these probabilities
    why: dict[str, str] = field(default_factory=dict)     # "model fold K" -> why it counts as missing

    def prerequisite_findings(self, calls: list[tuple]) -> list[Finding]:
        """DG507 for each fold in `missing`, from its entry of `validation.validation_calls`
        ((model, fold, call): the call makes them, on the device the fold was trained on): what
        the weight search, like nnU-Net's find_best_configuration, cannot run without."""
        out = []
        for m, k, call in calls:
            said = f"{m.spec} fold {k}"
            reason = f" ({self.why[said]})" if said in self.why else ""
            out.append(finding("DG507", str(Path(m.folder) / f"fold_{k}" / "validation"),
                               f"{SELECTION}: {said} has none of checkpoint_{self.checkpoint}{reason}",
                               help=f"{call.shell()} (or ensemble suggest --predict-missing)"))
        return out

    def store(self, prune: bool = True) -> "VoxelStore":
        """The reduced cases (made here from `probs`/`refs` when the OOF was built in memory)."""
        if self.reduced is not None and prune:
            return self.reduced
        store = VoxelStore()
        for c in self.cases:
            if c in self.probs and c in self.refs:
                store.add(reduce_case(c, self.probs[c], self.refs[c], prune, self.ignore))
        return store


class VoxelStore:
    """Reduced cases in order; contested voxels past the memory budget go to a temporary file
    and are read back one case at a time."""
    def __init__(self, memory_budget: int = MEMORY_BUDGET):
        self.budget = memory_budget
        self.meta: list[CaseVoxels] = []            # arrays dropped when spilled
        self._held = 0
        self._spill = None
        self._where: list[tuple[int, int] | None] = []
        self._chunks = None

    def add(self, cv: CaseVoxels) -> None:
        if self._held + cv.nbytes > self.budget:
            if self._spill is None:
                self._spill = tempfile.TemporaryFile(prefix="dataguard-oof-")
            at = self._spill.seek(0, os.SEEK_END)
            self._spill.write(cv.probs.tobytes())
            self._spill.write(cv.ref.tobytes())
            self._where.append((at, cv.contested))
            shape, dtypes = cv.probs.shape, (cv.probs.dtype, cv.ref.dtype)
            cv = CaseVoxels(cv.case, cv.ref_counts, cv.fixed_tp, cv.fixed_pred, (shape, dtypes[0]), dtypes[1],
                            cv.voxels)
        else:
            self._held += cv.nbytes
            self._where.append(None)
        self.meta.append(cv)

    def __len__(self) -> int:
        return len(self.meta)

    def cases(self):
        """(index, probs (M, C, n) float32, ref (n,) int64) per case, one in memory at a time."""
        import numpy as np

        for k, cv in enumerate(self.meta):
            where = self._where[k]
            if where is None:
                probs, ref = cv.probs, cv.ref
            else:
                (shape, pdt), rdt, (at, n) = cv.probs, cv.ref, where
                self._spill.seek(at)
                probs = np.frombuffer(self._spill.read(int(np.prod(shape)) * np.dtype(pdt).itemsize),
                                      dtype=pdt).reshape(shape)
                ref = np.frombuffer(self._spill.read(n * np.dtype(rdt).itemsize), dtype=rdt)
            yield k, probs.astype(np.float32, copy=False), ref.astype(np.int64)

    def chunks(self, limit: int = 1 << 18):
        """(case index (n,), probs (M, C, n) float32, ref (n,)) over consecutive cases joined up
        to about `limit` contested voxels: few numpy calls per pass, bounded memory. Made once
        and kept while nothing is spilled (the search passes over them dozens of times)."""
        if self._spill is not None:
            yield from self._make_chunks(limit)
            return
        if self._chunks is None or self._chunks[0] != (limit, len(self.meta)):
            self._chunks = ((limit, len(self.meta)), list(self._make_chunks(limit)))
        yield from self._chunks[1]

    def _make_chunks(self, limit: int):
        group: list = []
        size = 0
        for k, probs, ref in self.cases():
            group.append((k, probs, ref))
            size += ref.shape[0]
            if size >= limit:
                yield _join(group)
                group, size = [], 0
        if group:
            yield _join(group)

    def counts(self):
        """(reference, fixed true positives, fixed predictions) per case and class: (K, C) each."""
        import numpy as np

        return (np.stack([cv.ref_counts for cv in self.meta]), np.stack([cv.fixed_tp for cv in self.meta]),
                np.stack([cv.fixed_pred for cv in self.meta]))

    @property
    def voxels(self) -> int:
        return sum(cv.voxels for cv in self.meta)

    @property
    def contested(self) -> int:
        return sum((cv.ref.shape[0] if self._where[k] is None else self._where[k][1])
                   for k, cv in enumerate(self.meta))

    @property
    def spilled(self) -> bool:
        return self._spill is not None


def _join(group: list):
    import numpy as np

    idx = np.concatenate([np.full(r.shape[0], k, dtype=np.int64) for k, _, r in group])
    return idx, np.concatenate([p for _, p, _ in group], axis=2), np.concatenate([r for _, _, r in group])


# --- scoring ----------------------------------------------------------------------------------
def class_score(probs_c, w):
    """Class c's ensemble score on voxels: combine's arithmetic exactly (float32 weighted sum in
    model order, divided by the weights' sum), so the search predicts what `submit` writes."""
    import numpy as np

    acc = np.zeros(probs_c.shape[1:], dtype=np.float32)
    for m in range(probs_c.shape[0]):
        acc += probs_c[m] * np.float32(w[m])
    acc /= np.float32(sum(float(x) for x in w))
    return acc


def class_scores(probs_c, ws):
    """class_score for many weight vectors at once: (J, n), element for element the same float32
    operations in the same order."""
    import numpy as np

    ws = np.asarray(ws, dtype=np.float64)
    acc = np.zeros((ws.shape[0], probs_c.shape[1]), dtype=np.float32)
    for m in range(probs_c.shape[0]):
        acc += probs_c[m][None, :] * ws[:, m].astype(np.float32)[:, None]
    acc /= np.array([np.float32(sum(float(x) for x in w)) for w in ws], dtype=np.float32)[:, None]
    return acc


def _scores(probs, W):
    """(C, n) ensemble scores of every class under weights W (models x classes)."""
    import numpy as np

    return np.stack([class_score(probs[:, c], W[:, c]) for c in range(probs.shape[1])])


class _Tally:
    """Counts per candidate, case and class, from which Dice follows (evaluate's rule)."""

    def __init__(self, n_cand: int, ref, fixed_tp, fixed_pred):
        import numpy as np

        self.ref = ref
        self.J, (self.K, self.C) = n_cand, ref.shape
        self.tp = np.repeat(fixed_tp[None], n_cand, 0).astype(np.int64)
        self.pred = np.repeat(fixed_pred[None], n_cand, 0).astype(np.int64)

    def add(self, segs, case_idx, ref) -> None:
        """segs (J, n): every candidate's class for the chunk's voxels; one bincount each for
        predictions and true positives."""
        import numpy as np

        key = (np.arange(self.J, dtype=np.int64)[:, None] * self.K + case_idx[None, :]) * self.C + segs
        size = self.J * self.K * self.C
        self.pred += np.bincount(key.ravel(), minlength=size).reshape(self.J, self.K, self.C)
        self.tp += np.bincount(key[segs == ref[None, :]], minlength=size).reshape(self.J, self.K, self.C)

    def add_to_all(self, seg, case_idx, ref) -> None:
        """Voxels whose class is the same for every candidate: counted once, added to each."""
        import numpy as np

        key = case_idx * self.C + seg
        size = self.K * self.C
        self.pred += np.bincount(key, minlength=size).reshape(1, self.K, self.C)
        self.tp += np.bincount(key[seg == ref], minlength=size).reshape(1, self.K, self.C)

    def dice(self, j: int, labels: list[int]) -> dict[int, float | None]:
        out = {}
        for lab in labels:
            if lab >= self.C:
                out[lab] = None
                continue
            r, tp, p = self.ref[:, lab], self.tp[j, :, lab], self.pred[j, :, lab]
            vals = [2.0 * float(t) / float(a + b) for a, t, b in zip(r, tp, p) if a > 0]
            out[lab] = sum(vals) / len(vals) if vals else None
        return out


def _objective(d: dict[int, float | None]) -> float:
    vals = [v for v in d.values() if v is not None]
    return sum(vals) / len(vals) if vals else 0.0


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


def nnunet_candidates(models: list[str]) -> list[tuple[str, tuple[float, ...]]]:
    """Each model alone, then every subset of two or more with equal weights (the last: all
    models), named as nnU-Net's find_best_configuration would list them."""
    out = [(f"{m} alone", tuple(1.0 if i == j else 0.0 for j in range(len(models)))) for i, m in enumerate(models)]
    for size in range(2, len(models) + 1):
        for subset in itertools.combinations(range(len(models)), size):
            name = "equal " + "+".join(models[i] for i in subset)
            out.append((name, tuple(1.0 / size if j in subset else 0.0 for j in range(len(models)))))
    return out


@dataclass
class Candidate:
    name: str
    weights: tuple[float, ...]                  # per model, the same for every class
    dice: dict[int, float | None]

    @property
    def mean(self) -> float:
        return _objective(self.dice)


@dataclass
class Suggestion:
    models: list[str]
    labels: dict[int, str]
    weights: dict[int, tuple[float, ...]]                  # class (background included) -> weight per model
    equal: dict[int, float | None]                         # Dice per label with equal weights
    chosen: dict[int, float | None]                        # Dice per label with the chosen weights
    single: dict[str, dict[int, float | None]]             # each model alone
    table: dict[int, list[tuple[tuple[float, ...], float | None]]]   # label -> (candidate, its Dice)
    cases: int = 0
    rounds: int = 0
    candidates: list[Candidate] = field(default_factory=list)   # nnU-Net's, best first
    start: str = ""                                        # the candidate the ascent started from
    voxels: int = 0
    contested: int = 0
    checkpoint: str = "final"                              # whose out-of-fold probabilities: submit checks it
    gain: Gain | None = None                               # over nnU-Net's pick, with its interval

    @property
    def best_candidate(self) -> Candidate:
        """nnU-Net's pick: the best of its candidates out of fold."""
        return self.candidates[0]

    @property
    def equal_mean(self) -> float:
        return _objective(self.equal)

    @property
    def chosen_mean(self) -> float:
        return _objective(self.chosen)

    def weights_file(self) -> dict:
        return {"labels": {str(lab): {m: round(w, 4) for m, w in zip(self.models, ws)}
                           for lab, ws in sorted(self.weights.items())},
                "checkpoint": self.checkpoint}

    def to_dict(self) -> dict:
        return {"models": self.models, "cases": self.cases, "rounds": self.rounds,
                "weights": self.weights_file(), "start": self.start,
                "voxels": self.voxels, "contested_voxels": self.contested,
                "nnunet_candidates": [{"name": c.name, "weights": dict(zip(self.models, c.weights)),
                                       "mean_dice": c.mean, "dice": {self.labels[lab]: v for lab, v in c.dice.items()}}
                                      for c in self.candidates],
                "labels": {self.labels[lab]: {"equal": self.equal[lab], "chosen": self.chosen[lab],
                                              "gain": None if self.equal[lab] is None or self.chosen[lab] is None
                                              else self.chosen[lab] - self.equal[lab],
                                              "single": {m: self.single[m][lab] for m in self.models},
                                              "candidates": [{"weights": dict(zip(self.models, c)), "dice": d}
                                                             for c, d in self.table.get(lab, [])]}
                           for lab in self.labels},
                "mean_equal": _objective(self.equal), "mean_chosen": _objective(self.chosen),
                "mean_best_candidate": self.candidates[0].mean if self.candidates else None,
                "gain_over_nnunet_pick": None if self.gain is None else self.gain.to_dict()}


def _tally(store: VoxelStore, Ws: list) -> _Tally:
    import numpy as np

    ref, ftp, fpred = store.counts()
    tally = _Tally(len(Ws), ref, ftp, fpred)
    for idx, probs, r in store.chunks():
        tally.add(np.stack([_scores(probs, W).argmax(0) for W in Ws]), idx, r)
    return tally


def _evaluate(store: VoxelStore, Ws: list, labels: list[int]) -> list[dict[int, float | None]]:
    """Dice per label of each full weight matrix in `Ws`, one pass over the cases."""
    tally = _tally(store, Ws)
    return [tally.dice(j, labels) for j in range(len(Ws))]


def _case_counts(store: VoxelStore, Ws: list, labels: list[int]):
    """(ref (K, L), tp (J, K, L), pred (J, K, L)) per case of the labels some reference holds."""
    tally = _tally(store, Ws)
    cols = [lab for lab in labels if lab < tally.C]
    return tally.ref[:, cols], tally.tp[:, :, cols], tally.pred[:, :, cols]


def _ascend(store: VoxelStore, W, objective: float, labels: list[int], grid: list, rounds: int, on_step=None):
    """Coordinate ascent from W: (W, objective, last round's rows per label, rounds run).
    Foreground classes first, background last; a move only when the objective rises."""
    import numpy as np

    W = W.copy()
    n_classes = W.shape[1]
    order = [c for c in range(n_classes) if c != 0] + [0]
    table: dict[int, list] = {}
    done = 0
    for _ in range(rounds):
        done += 1
        changed = False
        for c in order:
            current = tuple(float(x) for x in W[:, c])
            options = [current] + grid          # the grid's rows are the table: every point scored
            ref, ftp, fpred = store.counts()
            tally = _Tally(len(options), ref, ftp, fpred)
            for idx, probs, r in store.chunks():
                S = _scores(probs, W)
                S[c] = -np.inf
                omax, oarg = S.max(0), S.argmax(0)
                # c's score is a weighted mean of its probabilities: where even the largest is below
                # the best other class (or the smallest above it), every option gives the same answer
                margin = np.float32(PRUNE_MARGIN)
                never = probs[:, c].max(0) + margin < omax
                always = probs[:, c].min(0) - margin > omax
                same = never | always
                tally.add_to_all(np.where(always[same], c, oarg[same]), idx[same], r[same])
                open_ = ~same
                pc = class_scores(probs[:, c][:, open_], options)                # (J, n open)
                om, oa = omax[open_][None], oarg[open_][None]
                wins = (pc > om) | ((pc == om) & (c < oa))
                tally.add(np.where(wins, c, oa), idx[open_], r[open_])
            results = [tally.dice(j, labels) for j in range(len(options))]
            if c in labels:
                table[c] = [(o, d[c]) for o, d in zip(options[1:], results[1:])]
            best_j = max(range(len(options)), key=lambda j: (_objective(results[j]), -j))
            if best_j != 0 and _objective(results[best_j]) > objective:
                W[:, c] = options[best_j]
                objective = _objective(results[best_j])
                changed = True
            if on_step:
                on_step(c)
        if not changed:
            break
    return W, objective, table, done


STARTS = 1          # the ascent runs from this many of the best candidates, and from equal weights


def search(oof: OOF, step: float = 0.1, rounds: int = 3, on_step=None, prune: bool = True) -> Suggestion:
    """The weights; never below the best of nnU-Net's candidates (see the module's docstring)."""
    labels = list(oof.labels)
    store = oof.store(prune)
    n_classes = int(store.meta[0].ref_counts.shape[0]) if len(store) else 0
    return search_from(store, oof.models, oof.labels, n_classes,
                       lambda st, Ws: _evaluate(st, Ws, labels),
                       lambda st, W, obj, grid, r, cb: _ascend(st, W, obj, labels, grid, r, cb),
                       step, rounds, on_step, counts=lambda st, Ws: _case_counts(st, Ws, labels))


def search_from(store: VoxelStore, models: list[str], labels: dict[int, str], n_channels: int, evaluate, ascend,
                step: float, rounds: int, on_step=None, regions: bool = False, counts=None) -> Suggestion:
    """What the label search and the region search share: nnU-Net's candidates scored, the
    ascent from the best of them and from equal weights, and the suggestion scored with the
    weights file's own (rounded) numbers, as submit will apply them.

    evaluate(store, [W, ...]) -> Dice per class of each weight matrix (models x channels);
    ascend(store, W, objective, grid, rounds, on_step) -> (W, objective, table, rounds run);
    regions: channel i is region i + 1 (there is no background channel);
    counts(store, [W, ...]) -> (ref, tp, pred) per case: the gain over nnU-Net's pick then gets
    a paired bootstrap interval over cases (evaluate/gain.py)."""
    import numpy as np

    if not len(store):
        raise UsageError("no case has out-of-fold probabilities from every model and a reference")

    def full(w_per_model):
        return np.repeat(np.asarray(w_per_model, dtype=np.float64)[:, None], n_channels, 1)

    named = nnunet_candidates(models)
    scores = evaluate(store, [full(w) for _, w in named])
    cands = sorted((Candidate(n, w, d) for (n, w), d in zip(named, scores)), key=lambda c: -c.mean)
    single = {m: next(c.dice for c in cands if c.name == f"{m} alone") for m in models}
    equal_c = next(c for c in cands if c.name == "equal " + "+".join(models))
    starts = cands[:STARTS] + ([equal_c] if equal_c not in cands[:STARTS] else [])
    grid = simplex(len(models), step)
    best = None
    for cand in starts:                   # best candidate first: on a tie it is kept
        W, obj, table, done = ascend(store, full(cand.weights), cand.mean, grid, rounds, on_step)
        if best is None or obj > best[1]:
            best = (W, obj, table, done, cand.name)
    W, _, table, done_rounds, start = best
    first = 1 if regions else 0
    weights = {c + first: tuple(float(x) / float(W[:, c].sum()) for x in W[:, c]) for c in range(n_channels)}
    sug = Suggestion(models, labels, weights, equal_c.dice, {}, single, table, len(store), done_rounds,
                     candidates=cands, start=start, voxels=store.voxels, contested=store.contested)
    written = Weights.parse(sug.weights_file(), models).matrix(models, n_channels, regions=regions)
    sug.chosen = evaluate(store, [written])[0]
    if counts is not None:
        ref, tp, pred = counts(store, [written, full(cands[0].weights)])
        d = per_case_dice(ref, tp, pred)
        sug.gain = paired_bootstrap(d[0], d[1])
    return sug


# --- reading ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlainReducer:
    """reduce_case with the dataset's ignore label, as a picklable callable (Dask workers)."""
    ignore: int | None = None

    def __call__(self, case, probabilities, ref, prune):
        return reduce_case(case, probabilities, ref, prune, self.ignore)


def reduce_files(case: str, npz: list, gt_dir, reader, reduce, prune: bool):
    """One case read and reduced where it runs (a thread, or a Dask worker that sees the same
    paths): the references, every model's probabilities, then only what the search needs."""
    ref = _read_ref(Path(gt_dir), case, reader)
    if ref is None:
        return None
    return reduce(case, [read_probabilities(p) for p in npz], ref, prune)


def load_oof(model_folds: dict[str, dict[int, Path]], gt_dir: Path, labels: dict[int, str],
             reader=None, on_case=None, jobs: int | None = None, prune: bool = True,
             memory_budget: int = MEMORY_BUDGET, ignore: int | None = None, reduce=None,
             executor=None) -> OOF:
    """Out-of-fold probabilities (fold_X/validation/*.npz) of each model and the references,
    read with nnU-Net's own reader so both are in the same array space, each case once and
    reduced as it is read (reduce_case, or a picklable `reduce(case, probabilities, ref, prune)`
    for regions): `jobs` cases at a time, on threads or on `executor` (a Dask client's: only
    the reduced cases travel back, the probabilities never leave the worker)."""
    models = list(model_folds)
    oof = OOF(models, labels, [], ignore=ignore)
    reduce = reduce if reduce is not None else PlainReducer(ignore)
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
    store = VoxelStore(memory_budget)
    workers = max(1, jobs or min(4, os.cpu_count() or 1))
    own = executor is None
    pool = ThreadPoolExecutor(max_workers=workers) if own else executor   # inflate and numpy release the GIL

    def submit(case):
        return pool.submit(reduce_files, case, [str(per_model[m][case].npz) for m in models], str(gt_dir),
                           reader, reduce, prune)
    try:
        pending = []
        todo = iter(oof.cases)
        for case in itertools.islice(todo, workers):
            pending.append(submit(case))
        while pending:
            cv = pending.pop(0).result()            # in order: the store and the progress follow cases
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(submit(nxt))         # never more than `workers` cases in memory
            if cv is not None:
                store.add(cv)
                if on_case:
                    on_case(cv.case)
    finally:
        if own:
            pool.shutdown(wait=True)
    oof.reduced = store
    oof.cases = [cv.case for cv in store.meta]
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
