"""tag_model.stats: the bootstrap intervals behind every learning and quality claim."""

from __future__ import annotations

import numpy as np
import pytest
from tag_model.stats import bootstrap_ci, bootstrap_diff_ci


def test_paired_difference_finds_a_real_shift_and_not_a_null_one():
    rng = np.random.default_rng(1)
    before = rng.uniform(0, 1, 300)
    shifted = bootstrap_diff_ci(before + 0.05 + rng.normal(0, 0.05, 300), before, paired=True)
    assert shifted["low"] > 0 and abs(shifted["mean"] - 0.05) < 0.02
    null = bootstrap_diff_ci(before + rng.normal(0, 0.05, 300), before, paired=True)
    assert null["low"] < 0 < null["high"]
    # pairing matters: the same shift between independent noisy samples is not resolved
    unpaired = bootstrap_diff_ci(before + 0.05 + rng.normal(0, 0.05, 300), before, paired=False)
    assert unpaired["high"] - unpaired["low"] > 2 * (shifted["high"] - shifted["low"])


def test_unpaired_difference_covers_the_truth_at_about_the_level():
    rng = np.random.default_rng(0)
    hits = 0
    for k in range(200):
        a, b = rng.normal(0.3, 1, 40), rng.normal(0.0, 1, 60)
        ci = bootstrap_diff_ci(a, b, paired=False, n_boot=500, seed=k)
        hits += ci["low"] <= 0.3 <= ci["high"]
    assert 0.88 <= hits / 200 <= 0.99


def test_nan_handling_and_errors():
    ci = bootstrap_diff_ci([1.0, np.nan, 3.0], [0.0, 0.0, np.nan], paired=True)
    assert ci["n"] == 1 and ci["mean"] == 1.0
    # one unit has no spread: no interval, so no "rise" can be claimed from it
    assert ci["low"] is None and ci["high"] is None
    one = bootstrap_diff_ci([0.9], [0.2], paired=False)
    assert one["mean"] == pytest.approx(0.7) and one["low"] is None
    assert bootstrap_ci([0.5])["low"] is None
    assert bootstrap_diff_ci([np.nan], [1.0], paired=False)["mean"] is None
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_diff_ci([1.0, 2.0], [1.0], paired=True)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0], level=1.5)


def test_tag_eval_reexports_the_same_function():
    from tag_eval import metrics

    assert metrics.bootstrap_ci is bootstrap_ci
