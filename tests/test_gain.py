"""Is a gain real? The paired bootstrap over cases (evaluate/gain.py): its score is evaluate's
(equal to the weight search's own Dice), its interval agrees with scipy's bootstrap where the
two compute the same statistic (tolerance 0.005 on each end: both resample at random), a
clear gain is significant, a noisy one is not, and `ensemble suggest` says which in words."""
from __future__ import annotations

import numpy as np
import pytest

from dataguard.evaluate.gain import Gain, paired_bootstrap, per_case_dice, score


def test_score_is_evaluates_mean_over_cases_with_the_label_then_labels():
    ref = np.array([[10, 0], [10, 5], [10, 5]])                   # label 2 absent from case 0
    tp = np.array([[[10, 0], [5, 5], [0, 0]]])
    pred = np.array([[[10, 3], [5, 5], [0, 5]]])
    d = per_case_dice(ref, tp, pred)[0]
    assert np.isnan(d[0, 1]) and d[1, 1] == 1.0 and d[2, 1] == 0.0
    assert score(d) == pytest.approx(((1 + 2 * 5 / 15 + 0) / 3 + (1 + 0) / 2) / 2)


def test_a_clear_gain_is_significant_and_noise_is_not():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.6, 0.9, size=(30, 3))
    better = paired_bootstrap(base + 0.02 + rng.normal(0, 0.005, base.shape), base)
    assert better.significant and better.low > 0.01 and better.high < 0.03
    assert "a real gain" in better.words()
    noise = paired_bootstrap(base + rng.normal(0, 0.03, base.shape), base)
    assert not noise.significant and noise.low < 0 < noise.high
    assert "is as good" in noise.words() and "30 cases" in noise.words()
    worse = paired_bootstrap(base - 0.05, base)
    assert worse.significant and worse.high < 0 and "lose" in worse.words()
    one = paired_bootstrap(base[:1] + 0.1, base[:1])               # one case: no interval can be had
    assert not one.significant and one.low == float("-inf")
    four = paired_bootstrap(base[:4] + 0.03, base[:4])             # a narrow interval, but on 4 cases
    assert four.low > 0 and not four.significant and "too few to tell" in four.words()
    assert Gain(0.01, -0.02, 0.04, 4, 0.95, 2000).to_dict()["significant"] is False


def test_interval_agrees_with_scipys_bootstrap():
    """With every label in every case, the score's difference is the mean of the per-case
    differences of the label means: scipy.stats.bootstrap (percentile, paired by construction)
    computes the same interval."""
    from scipy import stats

    rng = np.random.default_rng(7)
    a = rng.uniform(0.5, 0.95, size=(40, 2))
    b = np.clip(a - rng.normal(0.01, 0.03, a.shape), 0, 1)
    mine = paired_bootstrap(a, b, resamples=20000)
    diff = a.mean(1) - b.mean(1)
    ref = stats.bootstrap((diff,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                          random_state=3)
    assert mine.gain == pytest.approx(diff.mean(), abs=1e-12)
    assert mine.low == pytest.approx(ref.confidence_interval.low, abs=0.005)
    assert mine.high == pytest.approx(ref.confidence_interval.high, abs=0.005)


def test_the_search_reports_its_gain_over_nnunets_pick_with_an_interval():
    from test_weight_search import _one_better_everywhere

    from dataguard.evaluate.weights import _objective, search

    sug = search(_one_better_everywhere(cases=6))
    g = sug.gain
    assert g is not None and g.cases == 6
    assert g.gain == pytest.approx(_objective(sug.chosen) - sug.best_candidate.mean, abs=1e-12)
    assert g.low <= g.gain <= g.high
    assert sug.to_dict()["gain_over_nnunet_pick"]["words"] == g.words()
