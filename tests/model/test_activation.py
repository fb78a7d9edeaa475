"""The activated list: detector probabilities + landmarks -> top-K (AU, prob, box)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tag_kernels import IBUG68_REGIONS
from tag_model.activation import ActivatedAU, build_activated_list, build_activated_lists
from tag_model.detectors import GeometricAUDetector
from tag_model.synth import SynthFACS


@pytest.fixture(scope="module")
def faces():
    g = SynthFACS(size=160, seed=11)
    return [g.sample(i) for i in range(8)]


def _inside(box, pts) -> bool:
    x1, y1, x2, y2 = box
    return bool(
        ((pts[:, 0] >= x1) & (pts[:, 0] <= x2) & (pts[:, 1] >= y1) & (pts[:, 1] <= y2)).all()
    )


def test_detector_to_activated_list(faces) -> None:
    det = GeometricAUDetector()
    for s in faces:
        probs = det.predict(landmarks=s.landmarks)
        acts = build_activated_list(s.landmarks, s.image.size, probs, top_k=6, threshold=0.5)
        assert len(acts) <= 6
        assert all(isinstance(a, ActivatedAU) for a in acts)
        assert [a.prob for a in acts] == sorted((a.prob for a in acts), reverse=True)
        expected = sorted((p for au, p in probs.items() if p >= 0.5 and au in IBUG68_REGIONS.aus),
                          reverse=True)[:6]  # fmt: skip
        assert [a.prob for a in acts] == pytest.approx(expected, abs=1e-6)
        W, H = s.image.size
        for a in acts:
            x1, y1, x2, y2 = a.box
            assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
        by_au = {a.au: a for a in acts}
        if 12 in by_au:  # the lip-corner region holds both corners
            assert _inside(by_au[12].box, s.landmarks[[48, 54]])
        if 1 in by_au:  # inner-brow region sits above the eyes
            assert by_au[1].box[1] < s.landmarks[[37, 38, 43, 44], 1].min()
        if 17 in by_au:
            assert by_au[17].box[3] > s.landmarks[57, 1]


def test_top_k_threshold_and_unknown_aus(faces) -> None:
    s = faces[0]
    probs = {12: 0.9, 6: 0.8, 4: 0.49, 25: 0.5, 45: 0.99, 99: 1.0}
    acts = build_activated_list(s.landmarks, s.image.size, probs, top_k=2)
    assert [(a.au, a.prob) for a in acts] == [(12, pytest.approx(0.9)), (6, pytest.approx(0.8))]
    acts = build_activated_list(s.landmarks, s.image.size, probs, top_k=10, threshold=0.5)
    assert [a.au for a in acts] == [12, 6, 25]  # 45/99 have no region; 0.5 is inclusive
    assert build_activated_list(s.landmarks, s.image.size, {}, top_k=6) == []


def test_batched_equals_single(faces) -> None:
    det = GeometricAUDetector()
    lm = np.stack([s.landmarks for s in faces])
    probs = [det.predict(landmarks=s.landmarks) for s in faces]
    batch = build_activated_lists(lm, (160, 160), probs, top_k=4, threshold=0.3)
    for s, p, row in zip(faces, probs, batch):
        assert row == build_activated_list(s.landmarks, (160, 160), p, top_k=4, threshold=0.3)
    sizes = np.full((len(faces), 2), 160)
    assert build_activated_lists(lm, sizes, probs, top_k=4, threshold=0.3) == batch


def test_degenerate_landmarks_give_empty_list(faces) -> None:
    lm = faces[0].landmarks.copy()
    lm[39] = lm[42]  # zero unit distance -> all regions degenerate
    assert build_activated_list(lm, (160, 160), {12: 0.9, 1: 0.8}) == []
    with pytest.raises(ValueError, match=r"\[68, 2\]"):
        build_activated_list(np.zeros((10, 2)), (160, 160), {12: 0.9})
    with pytest.raises(ValueError, match="au_probs"):
        build_activated_lists(np.zeros((2, 68, 2)), (160, 160), [{}])


@settings(max_examples=30, deadline=None)
@given(
    st.dictionaries(st.sampled_from(IBUG68_REGIONS.aus), st.floats(0, 1), max_size=10),
    st.integers(0, 8),
    st.floats(0.05, 0.95),
)
def test_matches_brute_force(probs: dict[int, float], top_k: int, thr: float) -> None:
    s = SynthFACS(size=112, seed=1).sample(0, render=False)
    acts = build_activated_list(s.landmarks, (112, 112), probs, top_k=top_k, threshold=thr)
    f32 = {au: float(np.float32(p)) for au, p in probs.items()}
    want = sorted(
        ((au, p) for au, p in f32.items() if p >= np.float32(thr)), key=lambda t: (-t[1], t[0])
    )[:top_k]
    assert [(a.au, a.prob) for a in acts] == want
