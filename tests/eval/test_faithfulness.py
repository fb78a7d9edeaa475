"""Faithfulness metrics on hand-built fixtures whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tag_eval.faithfulness import (
    SampleGrounding,
    conclusion_aus,
    grounding_from_record,
    score_faithfulness,
    summarize_faithfulness,
)
from tag_kernels import IBUG68_REGIONS, landmarks_to_regions

SIZE = (128, 128)


def _landmarks() -> np.ndarray:
    """A plausible frontal iBUG-68 layout in a 128 px image (face spans ~[24, 104])."""
    pts = np.zeros((68, 2), np.float32)
    t = np.linspace(0, np.pi, 17)
    pts[0:17] = np.stack([64 - 40 * np.cos(t), 60 + 44 * np.sin(t)], 1)  # jaw
    pts[17:22] = np.stack([np.linspace(30, 58, 5), [46, 42, 40, 41, 43]], 1)  # left brow
    pts[22:27] = np.stack([np.linspace(70, 98, 5), [43, 41, 40, 42, 46]], 1)  # right brow
    pts[27:31] = np.stack([[64] * 4, np.linspace(52, 72, 4)], 1)  # nose bridge
    pts[31:36] = np.stack([np.linspace(56, 72, 5), [76, 78, 79, 78, 76]], 1)  # nostrils
    eye = np.array([[-10, 0], [-5, -4], [2, -4], [8, 0], [2, 3], [-5, 3]], np.float32)
    pts[36:42] = eye + np.array([46, 56], np.float32)
    pts[42:48] = eye[[3, 2, 1, 0, 5, 4]] * [-1, 1] + [82, 56]  # iBUG: 42 inner .. 45 outer
    mouth = np.stack(
        [
            64 + 16 * np.cos(np.linspace(np.pi, -np.pi, 13)[:-1]),
            92 - 6 * np.sin(np.linspace(np.pi, -np.pi, 13)[:-1]),
        ],
        1,
    )
    pts[48:60] = mouth
    pts[60:68] = np.stack(
        [
            64 + 10 * np.cos(np.linspace(np.pi, -np.pi, 9)[:-1]),
            92 - 2 * np.sin(np.linspace(np.pi, -np.pi, 9)[:-1]),
        ],
        1,
    )
    return pts


LM = _landmarks()
REGIONS = np.asarray(landmarks_to_regions(LM[None], np.asarray([SIZE], np.float32)))[0]


def region(au: int) -> np.ndarray:
    return REGIONS[IBUG68_REGIONS.region_of(au)].astype(np.float32)


def centre_sub_box(box: np.ndarray, frac: float) -> np.ndarray:
    """A box of ``frac`` x the width and height of ``box``, centred in it."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    w, h = (box[2] - box[0]) * frac, (box[3] - box[1]) * frac
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)


def sample(pred, act, *, answer=None, concl=(), landmarks=LM) -> SampleGrounding:
    return SampleGrounding(
        pred_au=[a for a, _ in pred],
        pred_boxes=np.array([b for _, b in pred], np.float32).reshape(-1, 4),
        ref_au=[a for a, _, _ in act],
        ref_prob=[p for _, p, _ in act],
        ref_boxes=np.array([b for _, _, b in act], np.float32).reshape(-1, 4),
        landmarks=landmarks,
        image_size=SIZE,
        answer=answer,
        conclusion_aus=list(concl),
    )


@pytest.fixture(scope="module")
def fixtures():
    r6, r12, r4, r1 = region(6), region(12), region(4), region(1)
    inner_r1 = centre_sub_box(r1, 0.25)  # IoU with r1 = 1/16
    corner = np.array([0, 0, 5, 5], np.float32)
    samples = [
        # 0: perfect grounding of two activated AUs; conclusion matches happiness.
        sample(
            [(6, r6), (12, r12)], [(6, 0.9, r6), (12, 0.8, r12)], answer="happiness", concl=(6, 12)
        ),
        # 1: AU4 right; AU12 claimed but not activated (a); a box with no AU in a corner (c).
        sample([(4, r4), (12, r12), (0, corner)], [(4, 0.7, r4)], answer="happiness", concl=(4,)),
        # 2: AU1 activated and claimed, but its box is a small patch inside the region (b).
        sample([(1, inner_r1)], [(1, 0.6, r1)], answer=None),
        # 3: no landmarks: no detector reference, everything undefined.
        sample([(6, r6)], [], answer="happiness", concl=(6, 12), landmarks=None),
        # 4: nothing predicted, AU6 activated.
        sample([], [(6, 0.5, r6)], answer="neutral", concl=()),
    ]
    return samples, score_faithfulness(samples, tau=0.3)


def test_precondition_fixture_geometry():
    # the sub-box is inside the face box and has IoU 1/16 with its region
    r1 = region(1)
    inner = centre_sub_box(r1, 0.25)
    lo, hi = LM.min(0), LM.max(0)
    m = 0.1 * max(hi - lo)
    assert inner[0] >= lo[0] - m and inner[1] >= lo[1] - m
    assert inner[2] <= hi[0] + m and inner[3] <= hi[1] + m
    assert (r1[2] - r1[0]) > 0 and (r1[3] - r1[1]) > 0


def test_grounding_f_by_hand(fixtures):
    _, s = fixtures
    assert s.grounding_f[0] == pytest.approx(1.0)
    # sample 1: the AU-0 box is an inspection, no prediction (class-aware reward): precision =
    # 1 matched IoU / 2 predicted pairs = 1/2, recall = 0.7*1/0.7 = 1 -> F1 = 2/3
    assert s.grounding_f[1] == pytest.approx(2 / 3, abs=1e-5)
    # sample 2: IoU 1/16, P = R = 1/16 -> F = 1/16
    assert s.grounding_f[2] == pytest.approx(1 / 16, abs=1e-4)
    assert math.isnan(s.grounding_f[3])
    assert s.grounding_f[4] == pytest.approx(0.0)


def test_au_precision_recall_by_hand(fixtures):
    _, s = fixtures
    assert s.au_precision[:3].tolist() == pytest.approx([1.0, 0.5, 1.0])
    assert s.au_recall[:3].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert math.isnan(s.au_precision[3]) and math.isnan(s.au_recall[3])
    assert math.isnan(s.au_precision[4])  # nothing claimed
    assert s.au_recall[4] == 0.0


def test_hallucination_counts_by_hand(fixtures):
    _, s = fixtures
    assert s.n_pairs.tolist() == [2, 3, 1, 1, 0]
    assert s.n_unactivated_aus.tolist() == [0, 1, 0, 0, 0]
    assert s.n_region_miss.tolist() == [0, 0, 1, 0, 0]
    assert s.n_outside_face.tolist() == [0, 1, 0, 0, 0]
    assert s.n_hallucinated_pairs.tolist() == [0, 2, 1, 0, 0]
    np.testing.assert_allclose(s.hallucination_rate, [0, 2 / 3, 1, np.nan, np.nan])
    np.testing.assert_allclose(s.unactivated_au_rate, [0, 1 / 2, 0, np.nan, np.nan])
    np.testing.assert_allclose(s.region_miss_rate, [0, 0, 1, np.nan, np.nan])
    np.testing.assert_allclose(s.outside_face_rate, [0, 1 / 3, 0, np.nan, np.nan])


def test_tau_is_configurable(fixtures):
    samples, _ = fixtures
    # IoU of sample 2's box is 1/16 = 0.0625: a miss at tau 0.3, not at tau 0.05.
    s = score_faithfulness(samples, tau=0.05)
    assert s.n_region_miss.tolist() == [0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="tau"):
        score_faithfulness(samples, tau=1.5)


def test_face_margin_decides_outside():
    lm = LM
    lo, hi = lm.min(0), lm.max(0)
    size = float(max(hi - lo))
    # a box just left of the landmark bbox, 5% of the face size away
    box = np.array([lo[0] - 0.08 * size, 60, lo[0] - 0.02 * size, 70], np.float32)
    s = [sample([(0, box)], [(6, 0.9, region(6))])]
    assert score_faithfulness(s, face_margin=0.0).n_outside_face[0] == 1
    assert score_faithfulness(s, face_margin=0.1).n_outside_face[0] == 0


def test_consistency_by_hand(fixtures):
    _, s = fixtures
    assert s.consistency[0] == 1.0  # AU6+AU12 -> happiness
    assert s.consistency[1] == 0.0  # AU4 does not signal happiness
    assert math.isnan(s.consistency[2])  # no answer
    assert s.consistency[3] == 1.0  # consistency needs no landmarks
    assert s.consistency[4] == 1.0  # neutral with no AUs


def test_summary_has_means_and_intervals(fixtures):
    _, s = fixtures
    summ = summarize_faithfulness(s, n_boot=500, seed=0)
    g = summ["grounding_f"]
    assert g["n"] == 4
    assert g["mean"] == pytest.approx((1 + 2 / 3 + 1 / 16 + 0) / 4, abs=1e-5)
    assert g["low"] <= g["mean"] <= g["high"]
    assert summ["counts"] == {
        "pairs": 7,
        "unactivated_aus": 1,
        "region_miss": 1,
        "outside_face": 1,
        "hallucinated_pairs": 3,
        "unparsed": 0,
        "empty_activated": 0,
        "empty_scored": 0,
    }
    assert summ["hallucination_rate"]["n"] == 3


def test_conclusion_aus_and_record_roundtrip():
    trace = (
        "Global analysis: smiling face\nVerification loop:\n"
        "Inspect cheeks → raised → AU6 <bbox>[1,2,3,4]</bbox>\n"
        "Final conclusion: Combined AU6 + AU12 (and au 6) indicate happiness.\n"
        "<answer> happiness </answer>"
    )
    assert conclusion_aus(trace) == [6, 12]
    rec = {
        "pred_pairs": [{"au": 6, "box": [1, 2, 3, 4]}],
        "activated": [{"au": 6, "prob": 0.9, "box": [1, 2, 3, 4]}],
        "landmarks": LM.tolist(),
        "image_size": list(SIZE),
        "prediction": "happiness",
        "conclusion_aus": [6, 12],
    }
    g = grounding_from_record(rec)
    assert g.pred_boxes.shape == (1, 4) and g.ref_prob.tolist() == pytest.approx([0.9])
    s = score_faithfulness([g])
    assert s.grounding_f[0] == pytest.approx(1.0)


def test_empty_batch():
    s = score_faithfulness([])
    assert s.grounding_f.shape == (0,)
    assert summarize_faithfulness(s)["grounding_f"]["n"] == 0


def test_unparsed_completion_scores_zero_whatever_the_activated_list():
    r6 = region(6)
    samples = [
        # 0: did not parse, detector found nothing: 0, not the kernel's empty value
        sample([], []),
        # 1: did not parse, but its stray pair matches the detector exactly: still 0
        sample([(6, r6)], [(6, 0.9, r6)]),
        # 2: a well-formed trace without boxes, detector found nothing: empty_value
        sample([], []),
        # 3: well formed, no boxes, but the detector found AU6: 0
        sample([], [(6, 0.9, r6)]),
        # 4: did not parse and no face: undefined
        sample([], [], landmarks=None),
    ]
    for i in (0, 1, 4):
        samples[i].well_formed = False
    s = score_faithfulness(samples)
    assert s.grounding_f[:4].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert math.isnan(s.grounding_f[4])
    assert s.unparsed.tolist() == [True, True, False, False, False]
    assert s.empty_activated.tolist() == [True, False, True, False, False]
    assert s.empty_scored.tolist() == [False, False, True, False, False]
    assert score_faithfulness(samples, empty_value=0.5).grounding_f[2] == 0.5
    counts = summarize_faithfulness(s, n_boot=50)["counts"]
    assert (counts["unparsed"], counts["empty_activated"], counts["empty_scored"]) == (2, 2, 1)
    assert s.per_sample(0)["unparsed"] is True and s.per_sample(2)["empty_scored"] is True


def test_well_formed_reads_the_parse_entry():
    from tag_eval.faithfulness import well_formed

    assert well_formed(None) and well_formed({"format_ok": True, "reasons": []})
    assert well_formed({"format_ok": False, "reasons": ["NO_BOXED_STEP at 0: none"]})
    assert not well_formed({"format_ok": False, "reasons": []})
    assert not well_formed(
        {"format_ok": False, "reasons": ["NO_BOXED_STEP at 0: x", "MISSING_ANSWER at 9: y"]}
    )
    assert not well_formed({"format_ok": True, "well_formed": False})
    rec = {
        "pred_pairs": [],
        "activated": [],
        "landmarks": LM.tolist(),
        "image_size": list(SIZE),
        "parse": {"format_ok": False, "answer_ok": False, "reasons": ["parser error: boom"]},
    }
    g = grounding_from_record(rec)
    assert not g.well_formed and score_faithfulness([g]).grounding_f[0] == 0.0
