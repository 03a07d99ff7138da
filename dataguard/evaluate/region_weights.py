"""Per-region ensemble weights for region-based datasets (BraTS-style `"whole": [1, 2, 3]`).

A region model writes one sigmoid probability per region. `submit`'s ensemble combines each
region's probability with its own weights (`ensemble.combine`: the float32 weighted mean) and
makes the label map as nnU-Net does: regions in order, a voxel whose combined probability
exceeds 0.5 takes the region's `regions_class_order` value, later regions overwrite earlier
ones. Each region is then scored on that label map (a region is the voxels holding any of
its values), as `evaluate` and nnU-Net's compute_metrics do.

The search is the one of `weights.py` with this rule in place of the argmax: nnU-Net's
candidates first (each model alone, equal subsets), coordinate ascent over the regions from
the best of them, moves only when the mean region Dice rises. The pruning is exact for the
same reason: a region's combined probability is a convex combination of the models', so a
voxel where every model is above 0.5 (or every model at most 0.5), by a margin over float32
rounding, decides that region the same way under every weight; a voxel whose every region is
decided has one label value under every weight vector and is kept as counts only.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from .weights import (
    PRUNE_MARGIN,
    CaseVoxels,
    Suggestion,
    VoxelStore,
    _objective,
    class_score,
    class_scores,
    search_from,
)

THRESHOLD = 0.5


@dataclass(frozen=True)
class RegionRule:
    """What turns region probabilities into a label map and a label map into regions."""
    values: dict[int, tuple[int, ...]]       # region key (1-based) -> the label values it is
    order: tuple[int, ...]                   # regions_class_order: the value region i writes
    ignore: int | None = None

    @property
    def n(self) -> int:
        return len(self.order)

    def members(self, top: int):
        """(R, top+1) bool: does label value v belong to region k."""
        import numpy as np

        table = np.zeros((self.n, top + 1), dtype=bool)
        for k, vals in self.values.items():
            for v in vals:
                if v <= top:
                    table[k - 1, v] = True
        return table

    def top(self) -> int:
        return max([*self.order, *(v for vs in self.values.values() for v in vs), 0])


@dataclass(frozen=True)
class RegionReducer:
    """reduce_region_case for one rule, as a picklable callable (load_oof's `reduce`)."""
    rule: RegionRule

    def __call__(self, case, probabilities, ref, prune):
        return reduce_region_case(case, probabilities, ref, self.rule, prune)


def region_rule(spec) -> RegionRule | None:
    """The RegionRule of a DatasetSpec (None for plain labels)."""
    if not spec.has_regions or spec.regions_class_order is None:
        return None
    return RegionRule({k: v for k, (_, v) in spec.classes.items()}, tuple(spec.regions_class_order),
                      spec.ignore_label)


def segment(decisions, order: tuple[int, ...]):
    """(R, n) bool region decisions -> (n,) label values, later regions winning."""
    import numpy as np

    seg = np.zeros(decisions.shape[1:], dtype=np.int64)
    for i, c in enumerate(order):
        seg[decisions[i]] = c
    return seg


def reduce_region_case(case: str, probabilities: list, ref, rule: RegionRule, prune: bool = True) -> CaseVoxels:
    """One case's region probabilities (R, ...) per model and its reference label map to fixed
    counts per region + the contested voxels; ignore voxels count nowhere."""
    import numpy as np

    n = probabilities[0].shape[0]
    if n != rule.n:
        raise UsageError(f"case {case}: the probabilities hold {n} channels, dataset.json declares {rule.n} regions")
    raw = [p.reshape(n, -1) for p in probabilities]
    r = np.asarray(ref).reshape(-1).astype(np.int64)
    if r.shape[0] != raw[0].shape[1] or any(a.shape != raw[0].shape for a in raw):
        raise UsageError(f"case {case}: the reference has {r.shape[0]} voxels, the probabilities "
                         f"{[a.shape for a in raw]}: not the same image")
    keep_valid = (r >= 0) & (r <= rule.top()) & ((r != rule.ignore) if rule.ignore is not None else True)
    voxels = int(r.shape[0])
    if not keep_valid.all():
        raw = [a[:, keep_valid] for a in raw]
        r = r[keep_valid]
    member = rule.members(rule.top())
    ref_in = member[:, r]                                    # (R, n) reference holds region k
    ref_counts = ref_in.sum(1).astype(np.int64)
    if prune:
        lo, hi = raw[0].astype(np.float32), raw[0].astype(np.float32)
        for a in raw[1:]:
            a32 = a.astype(np.float32)
            np.minimum(lo, a32, out=lo)
            np.maximum(hi, a32, out=hi)
        on = lo > np.float32(THRESHOLD + PRUNE_MARGIN)
        off = hi <= np.float32(THRESHOLD - PRUNE_MARGIN)
        fixed = (on | off).all(0)
        seg = segment(on[:, fixed], rule.order)
        pred_in = member[:, seg]
        fixed_pred = pred_in.sum(1).astype(np.int64)
        fixed_tp = (pred_in & ref_in[:, fixed]).sum(1).astype(np.int64)
    else:
        fixed = np.zeros(r.shape[0], dtype=bool)
        fixed_pred = fixed_tp = np.zeros(rule.n, dtype=np.int64)
    keep = ~fixed
    probs = np.stack([a[:, keep] for a in raw]) if keep.any() else np.zeros((len(raw), n, 0), raw[0].dtype)
    return CaseVoxels(case, ref_counts, fixed_tp, fixed_pred, probs, r[keep].astype(np.int16), voxels=voxels)


class _RegionTally:
    """tp / pred per candidate, case and region; Dice per region as evaluate computes it."""

    def __init__(self, n_cand: int, store: VoxelStore, rule: RegionRule):
        import numpy as np

        ref, ftp, fpred = store.counts()
        self.ref, self.J, (self.K, self.R) = ref, n_cand, ref.shape
        self.tp = np.repeat(ftp[None], n_cand, 0).astype(np.int64)
        self.pred = np.repeat(fpred[None], n_cand, 0).astype(np.int64)
        self.member = rule.members(rule.top())

    def add(self, segs, case_idx, ref) -> None:
        """segs (J, n) label values of every candidate on a chunk's voxels."""
        import numpy as np

        ref_in = self.member[:, ref]                          # (R, n)
        key = np.arange(self.J, dtype=np.int64)[:, None] * self.K + case_idx[None, :]
        size = self.J * self.K
        for k in range(self.R):
            p = self.member[k][segs]                          # (J, n)
            self.pred[:, :, k] += np.bincount(key[p], minlength=size).reshape(self.J, self.K)
            self.tp[:, :, k] += np.bincount(key[p & ref_in[k][None, :]], minlength=size).reshape(self.J, self.K)

    def dice(self, j: int) -> dict[int, float | None]:
        out = {}
        for k in range(self.R):
            r, tp, p = self.ref[:, k], self.tp[j, :, k], self.pred[j, :, k]
            vals = [2.0 * float(t) / float(a + b) for a, t, b in zip(r, tp, p) if a > 0]
            out[k + 1] = sum(vals) / len(vals) if vals else None
        return out


def _decisions(probs, W):
    """(R, n) bool: combined probability of each region above the threshold (combine's float32)."""
    import numpy as np

    return np.stack([class_score(probs[:, i], W[:, i]) > np.float32(THRESHOLD) for i in range(probs.shape[1])])


def _region_tally(store: VoxelStore, Ws: list, rule: RegionRule) -> _RegionTally:
    import numpy as np

    tally = _RegionTally(len(Ws), store, rule)
    for idx, probs, r in store.chunks():
        tally.add(np.stack([segment(_decisions(probs, W), rule.order) for W in Ws]), idx, r)
    return tally


def evaluate_regions(store: VoxelStore, Ws: list, rule: RegionRule) -> list[dict[int, float | None]]:
    tally = _region_tally(store, Ws, rule)
    return [tally.dice(j) for j in range(len(Ws))]


def region_case_counts(store: VoxelStore, Ws: list, rule: RegionRule):
    """(ref (K, R), tp (J, K, R), pred (J, K, R)) per case and region."""
    tally = _region_tally(store, Ws, rule)
    return tally.ref, tally.tp, tally.pred


def _ascend(store: VoxelStore, W, objective: float, rule: RegionRule, grid: list, rounds: int, on_step=None):
    """Coordinate ascent over regions: (W, objective, table, rounds run)."""
    import numpy as np

    W = W.copy()
    order = rule.order
    table: dict[int, list] = {}
    done = 0
    for _ in range(rounds):
        done += 1
        changed = False
        for i in range(rule.n):
            current = tuple(float(x) for x in W[:, i])
            options = [current] + grid
            tally = _RegionTally(len(options), store, rule)
            for idx, probs, r in store.chunks():
                D = _decisions(probs, W)
                after = np.zeros(r.shape[0], dtype=np.int64)      # value of the last deciding region after i
                has_after = np.zeros(r.shape[0], dtype=bool)
                for j in range(i + 1, rule.n):
                    after[D[j]] = order[j]
                    has_after |= D[j]
                before = segment(D[:i], order[:i]) if i else np.zeros(r.shape[0], dtype=np.int64)
                Di = class_scores(probs[:, i], options) > np.float32(THRESHOLD)       # (J, n)
                segs = np.where(has_after[None], after[None], np.where(Di, order[i], before[None]))
                tally.add(segs, idx, r)
            results = [tally.dice(j) for j in range(len(options))]
            table[i + 1] = [(o, d[i + 1]) for o, d in zip(options[1:], results[1:])]
            best_j = max(range(len(options)), key=lambda j: (_objective(results[j]), -j))
            if best_j != 0 and _objective(results[best_j]) > objective:
                W[:, i] = options[best_j]
                objective = _objective(results[best_j])
                changed = True
            if on_step:
                on_step(i + 1)
        if not changed:
            break
    return W, objective, table, done


def _store(oof, rule: RegionRule, prune: bool) -> VoxelStore:
    """The reduced cases (load_oof streamed them already, or made here from in-memory arrays)."""
    if oof.reduced is not None and prune:
        return oof.reduced
    store = VoxelStore()
    for c in oof.cases:
        if c in oof.probs and c in oof.refs:
            store.add(reduce_region_case(c, oof.probs[c], oof.refs[c], rule, prune))
    return store


def search_regions(oof, rule: RegionRule, step: float = 0.1, rounds: int = 3, on_step=None,
                   prune: bool = True) -> Suggestion:
    """Per-region weights; never below the best of nnU-Net's candidates (weights.search_from)."""
    return search_from(_store(oof, rule, prune), oof.models, oof.labels, rule.n,
                       lambda st, Ws: evaluate_regions(st, Ws, rule),
                       lambda st, W, obj, grid, r, cb: _ascend(st, W, obj, rule, grid, r, cb),
                       step, rounds, on_step, regions=True,
                       counts=lambda st, Ws: region_case_counts(st, Ws, rule))
