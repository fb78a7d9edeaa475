"""The activated list: detector probabilities + landmarks -> top-K (AU, prob, box)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tag_kernels import IBUG68_REGIONS
from tag_model.activation import (
    ActivatedAU,
    build_activated_list,
    build_activated_lists,
    pack_activated,
)
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


# ----------------------------------------------------------------------------- pack_activated
def _entries(*entries):
    return [{"au": au, "prob": p, "box": list(b)} for au, p, b in entries]


def _pack_reference(activated):
    """pack_activated written the plain way: one entry at a time."""
    m = max([1, *(len(r) for r in activated)])
    boxes = np.zeros((len(activated), m, 4), dtype=np.float32)
    aus = np.full((len(activated), m), -1, dtype=np.int32)
    probs = np.zeros((len(activated), m), dtype=np.float32)
    for i, row in enumerate(activated):
        for j, e in enumerate(row):
            au, p, b = (e["au"], e["prob"], e["box"]) if isinstance(e, dict) else tuple(e)
            aus[i, j], probs[i, j] = au, p
            boxes[i, j] = np.asarray(b, dtype=np.float64).astype(np.float32)
    return boxes, aus, probs


def test_pack_activated_entry_forms_and_padding():
    from tag_model.activation import ActivatedAU

    rng = np.random.default_rng(1)

    def box():
        x, y = rng.uniform(0, 100, 2)
        return [float(x), float(y), float(x + rng.uniform(1, 50)), float(y + rng.uniform(1, 50))]

    full = [
        _entries(*((int(a), float(rng.uniform()), box()) for a in (1, 4, 12))) for _ in range(5)
    ]
    cases = {
        "dicts, every row full": full,
        "dicts, ragged": [full[0], [], full[1][:1], full[2][:2]],
        "ActivatedAU": [[ActivatedAU(6, 0.5, tuple(box())), ActivatedAU(12, 0.25, tuple(box()))]],
        "tuples, mixed box types": [
            [(4, 0.75, box()), (9, 0.5, tuple(box())), (15, 1.0, np.array(box(), np.float32))],
            [(26, 0.125, np.array(box()))],
        ],
        "numpy scalars": [[{"au": np.int64(7), "prob": np.float32(0.5), "box": box()}]],
        "no entries": [[], []],
        "no rows": [],
    }
    for name, act in cases.items():
        got, want = pack_activated(act), _pack_reference(act)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape, name
            assert g.flags.c_contiguous, name
            np.testing.assert_array_equal(g, w, err_msg=name)
    boxes, aus, probs = pack_activated(cases["dicts, ragged"])
    assert boxes.shape == (4, 3, 4) and aus[1].tolist() == [-1, -1, -1]
    assert (boxes[2, 1:] == 0).all() and (probs[3, 2:] == 0).all()


@pytest.mark.parametrize(
    ("activated", "where"),
    [
        ([[{"au": 1, "prob": 0.5, "box": [1, 2, 3]}]], r"activated\[0\]\[0\] box"),
        # a 5-box and a 3-box hold 8 numbers, like two boxes: still an error, at the 5-box
        (
            [
                _entries((1, 0.5, (0, 0, 1, 1))),
                [
                    {"au": 2, "prob": 0.5, "box": [1, 2, 3, 4, 5]},
                    {"au": 3, "prob": 1, "box": [1, 2, 3]},
                ],
            ],
            r"activated\[1\]\[0\] box",
        ),
        ([[{"au": 1, "prob": 0.5, "box": 7}]], r"activated\[0\]\[0\] box"),
        ([[{"au": 1, "prob": 0.5, "box": ["a", "b", "c", "d"]}]], "4 numbers"),
        ([[{"au": 1, "prob": 0.5}]], "entries must be"),
        ([[(1, 0.5)]], "entries must be"),
    ],
)
def test_pack_activated_rejects_bad_entries(activated, where):
    with pytest.raises(ValueError, match=where):
        pack_activated(activated)
