"""Is a gain real? A paired bootstrap over cases of the difference between two ways of
segmenting the same out-of-fold cases (suggested weights against nnU-Net's pick).

The score is evaluate's: per label, the mean Dice over the cases whose reference holds the
label; then the mean over labels. A resample draws cases with replacement and scores both
ways on the same draw (paired: a hard case is hard for both), B times; the gain's interval is
the 2.5th to 97.5th percentile of the differences (percentile bootstrap). A gain whose
interval holds 0 is not significant: as far as these cases can tell, nnU-Net's pick is as
good. Below MIN_CASES cases the percentile bootstrap understates the spread (it can only
reshuffle the few cases there are), so no gain is called real however narrow its interval:
the team this was built for chased a gain measured on 4 cases.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

RESAMPLES = 2000
LEVEL = 0.95
MIN_CASES = 10           # below this the percentile bootstrap's interval is too narrow to trust
                         # (4 cases have 35 distinct resamples): nothing is called significant
SEED = 20261207          # fixed: the same out-of-fold data always prints the same interval


@dataclass(frozen=True)
class Gain:
    gain: float                 # score(a) - score(b) on all cases
    low: float                  # the interval, at `level`
    high: float
    cases: int
    level: float
    resamples: int

    @property
    def significant(self) -> bool:
        return self.cases >= MIN_CASES and (self.low > 0 or self.high < 0)

    def words(self, what: str = "the suggested weights", other: str = "nnU-Net's pick") -> str:
        span = f"{self.level:.0%} interval {self.low:+.3f} to {self.high:+.3f}, {self.cases} cases"
        if self.cases < MIN_CASES:
            return (f"{self.gain:+.3f} on only {self.cases} cases ({self.level:.0%} interval {self.low:+.3f} to "
                    f"{self.high:+.3f}): too few to tell, so {other} is as good as far as anyone can say "
                    f"(at least {MIN_CASES} cases are needed)")
        if self.low > 0:
            return f"{what} beat {other} by {self.gain:+.3f} ({span}): a real gain as far as these cases tell"
        if self.high < 0:
            return f"{what} lose to {other} by {self.gain:+.3f} ({span})"
        return (f"{self.gain:+.3f} is not significant ({span}): as far as these cases can tell, "
                f"{other} is as good")

    def to_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant, "words": self.words()}


def per_case_dice(ref, tp, pred):
    """(J, K, L) Dice of candidate j, case k, label column l from the tallies' counts (ref
    (K, L), tp and pred (J, K, L)); NaN where the case's reference lacks the label."""
    import numpy as np

    ref = np.asarray(ref, dtype=np.float64)
    tp, pred = np.asarray(tp, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 2.0 * tp / (ref[None] + pred)
    d[:, ref <= 0] = np.nan
    return d


def score(d):
    """evaluate's score of per-case Dice d (..., K, L): per label the mean over the cases with
    it, then the mean over the labels any case holds."""
    import numpy as np

    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)          # a label no drawn case holds
            per_label = np.nanmean(d, axis=-2)
            return np.nanmean(per_label, axis=-1)


def paired_bootstrap(a, b, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED) -> Gain:
    """The gain of a over b (per-case Dice arrays (K, L), NaN where a label is absent; the same
    NaN pattern in both) with its percentile interval."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    k = a.shape[0]
    gain = float(score(a) - score(b))
    if k < 2:
        return Gain(gain, float("-inf"), float("inf"), k, level, 0)
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for start in range(0, resamples, 250):          # 250 draws at a time: bounded memory
        n = min(250, resamples - start)
        idx = rng.integers(0, k, size=(n, k))
        diffs[start:start + n] = score(a[idx]) - score(b[idx])
    diffs = diffs[np.isfinite(diffs)]
    lo, hi = np.percentile(diffs, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return Gain(gain, float(lo), float(hi), k, level, resamples)
