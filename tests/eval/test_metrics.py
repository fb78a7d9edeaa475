"""Classification metrics and confidence intervals against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tag_eval.metrics import (
    accuracy,
    bootstrap_ci,
    classification_metrics,
    confusion_matrix,
    macro_f1,
    per_class_accuracy,
    per_class_f1,
    wilson_ci,
)

# 3 classes a, b, c. Ten samples; -1 = no answer.
LABELS = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PREDS = [0, 0, 1, -1, 1, 1, 0, 2, 1, -1]


def test_confusion_matrix_by_hand():
    cm, unanswered = confusion_matrix(LABELS, PREDS, 3)
    assert cm.tolist() == [[2, 1, 0], [1, 2, 0], [0, 1, 1]]
    assert unanswered.tolist() == [1, 0, 1]
    assert cm.sum() + unanswered.sum() == len(LABELS)


def test_accuracy_and_per_class_by_hand():
    assert accuracy(LABELS, PREDS) == pytest.approx(5 / 10)
    pca = per_class_accuracy(LABELS, PREDS, 3)
    assert pca.tolist() == pytest.approx([2 / 4, 2 / 3, 1 / 3])


def test_f1_by_hand():
    # a: tp=2 fp=1 (a sample of b) fn=2 (one b, one unanswered) -> 4/7
    # b: tp=2 fp=2 fn=1 -> 4/7
    # c: tp=1 fp=0 fn=2 -> 2/4
    f1 = per_class_f1(LABELS, PREDS, 3)
    assert f1.tolist() == pytest.approx([4 / 7, 4 / 7, 1 / 2])
    assert macro_f1(LABELS, PREDS, 3) == pytest.approx((4 / 7 + 4 / 7 + 1 / 2) / 3)


def test_f1_ignores_absent_classes_and_counts_false_positives():
    # class 2 never appears nor is predicted -> left out of the mean.
    assert math.isnan(per_class_f1([0, 1], [0, 1], 3)[2])
    assert macro_f1([0, 1], [0, 1], 3) == pytest.approx(1.0)
    # class 2 predicted but never present -> F1 0, included.
    assert macro_f1([0, 1], [0, 2], 3) == pytest.approx((1.0 + 0.0 + 0.0) / 3)


def test_classification_metrics_dict():
    m = classification_metrics(LABELS, PREDS, ("a", "b", "c"))
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["answered_rate"] == pytest.approx(0.8)
    assert m["per_class"]["c"] == {"accuracy": pytest.approx(1 / 3), "f1": 0.5, "support": 3}
    assert m["confusion"] == [[2, 1, 0], [1, 2, 0], [0, 1, 1]]
    assert m["labels"] == ["a", "b", "c"]


def test_bad_ids_raise_with_the_value():
    with pytest.raises(ValueError, match="label id 5"):
        confusion_matrix([5], [0], 3)
    with pytest.raises(ValueError, match="prediction id 3"):
        confusion_matrix([0], [3], 3)


def test_bootstrap_ci_contains_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.random(20)
    big = rng.random(2000)
    ci_s = bootstrap_ci(small, seed=0)
    ci_b = bootstrap_ci(big, seed=0)
    assert ci_s["low"] <= ci_s["mean"] <= ci_s["high"]
    assert ci_b["low"] <= ci_b["mean"] <= ci_b["high"]
    assert ci_s["mean"] == pytest.approx(small.mean())
    width_s = ci_s["high"] - ci_s["low"]
    width_b = ci_b["high"] - ci_b["low"]
    assert width_b < width_s / 4  # ~ 1/sqrt(100) = 1/10 in theory
    # the interval of a U(0,1) mean at n=2000 has half-width ~ 1.96 * 0.2887 / sqrt(2000)
    assert width_b == pytest.approx(2 * 1.96 * 0.2887 / math.sqrt(2000), rel=0.2)


def test_bootstrap_ci_is_seeded_and_drops_nan():
    x = [0.0, 1.0, float("nan"), 1.0, 0.5]
    a = bootstrap_ci(x, seed=3)
    b = bootstrap_ci(x, seed=3)
    assert a == b
    assert a["n"] == 4 and a["mean"] == pytest.approx(0.625)
    y = np.random.default_rng(0).random(40)
    assert bootstrap_ci(y, seed=3)["low"] != bootstrap_ci(y, seed=4)["low"]
    empty = bootstrap_ci([float("nan")])
    assert empty["n"] == 0 and empty["mean"] is None


def test_bootstrap_constant_values_give_degenerate_interval():
    ci = bootstrap_ci([0.4] * 10)
    assert ci["low"] == pytest.approx(0.4) and ci["high"] == pytest.approx(0.4)


def test_wilson_interval_matches_formula():
    lo, hi = wilson_ci(8, 10)
    # z = 1.959964; centre = (0.8 + z^2/20) / (1 + z^2/10)
    z = 1.959963984540054
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400) / (1 + z * z / 10)
    assert (lo, hi) == pytest.approx((centre - half, centre + half))
    assert wilson_ci(0, 10)[0] == 0.0 and wilson_ci(10, 10)[1] == 1.0
    assert wilson_ci(0, 10)[1] == pytest.approx(z * z / 10 / (1 + z * z / 10))
    assert all(math.isnan(v) for v in wilson_ci(0, 0))


def test_run_where_nothing_parsed_has_grounding_f_zero(tmp_path, synth_pool):
    """No sample parsed: grounding F is 0 even where the activated list is empty, and the
    parse failures and empty activated lists are counted on their own."""
    from tag_eval.metrics import compute_metrics

    from .conftest import crafted_records, write_run

    recs = crafted_records(synth_pool, quality="good")
    for i, r in enumerate(recs):
        r.update(
            trace="I think this is a face.",
            prediction=None,
            prediction_id=-1,
            correct=False,
            pred_pairs=[],
            conclusion_aus=[],
            parse={
                "format_ok": False,
                "well_formed": False,
                "answer_ok": False,
                "reasons": ["MISSING_GLOBAL_ANALYSIS at 0: no Global analysis"],
            },
        )
        if i % 4 == 0:
            r["activated"] = []  # scored 1.0 through empty_value before
    m = compute_metrics(write_run(tmp_path / "r", recs), n_boot=50)
    g = m["faithfulness"]["grounding_f"]
    assert g["mean"] == 0.0 and g["n"] == len(recs)
    assert m["parse"]["parse_failures"] == len(recs) and m["parse"]["parse_failure_rate"] == 1.0
    n_empty = sum(not r["activated"] for r in recs)  # ours, and faces with no active AU
    assert n_empty >= 2
    assert m["parse"]["empty_activated"] == n_empty
    counts = m["faithfulness"]["counts"]
    assert counts["unparsed"] == len(recs) and counts["empty_activated"] == n_empty
    assert counts["empty_scored"] == 0
    one = m["per_sample_faithfulness"][recs[0]["id"]]
    assert one["grounding_f"] == 0.0 and one["unparsed"] and one["empty_activated"]
