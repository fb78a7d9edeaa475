"""SynthFACS: determinism, geometry, labels, RAF-DB layout."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tag_model.au import RAFDB, consistent_with
from tag_model.synth import (
    NEUTRAL_SHAPE,
    PRESENCE_THRESHOLD,
    SYNTH_AUS,
    SynthFACS,
    expression_shape,
    read_synth_annotations,
    write_rafdb_layout,
)

BRIEF_AUS = (1, 2, 4, 5, 6, 7, 9, 12, 15, 17, 20, 25, 26, 43)


def test_sample_types_and_shapes() -> None:
    g = SynthFACS(size=112, seed=0)
    s = g.sample(0)
    assert isinstance(s.image, Image.Image) and s.image.mode == "RGB" and s.image.size == (112, 112)
    assert s.landmarks.shape == (68, 2) and s.landmarks.dtype == np.float32
    assert (s.landmarks >= 0).all() and (s.landmarks <= 111).all()
    assert s.label in RAFDB.names
    assert all(au in SYNTH_AUS and 0 < v <= 1 for au, v in s.au_intensity.items())


def test_sample_is_pure_function_of_seed_and_index() -> None:
    a = SynthFACS(seed=3).sample(17)
    g = SynthFACS(seed=3)
    for i in (0, 5, 40):
        g.sample(i)  # other samples in between change nothing
    b = g.sample(17)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert np.array_equal(a.landmarks, b.landmarks)
    assert a.au_intensity == b.au_intensity and a.label == b.label
    c = SynthFACS(seed=4).sample(17)
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))
    d = g.sample(17, render=False)
    assert d.image is None and np.array_equal(d.landmarks, a.landmarks)
    assert d.au_intensity == a.au_intensity


@pytest.mark.parametrize("size", [112, 160, 224])
def test_sizes(size: int) -> None:
    s = SynthFACS(size=size, seed=1).sample(2)
    assert s.image.size == (size, size)
    bbox = s.landmarks.max(0) - s.landmarks.min(0)
    assert 0.35 * size < bbox[0] < 0.8 * size and 0.35 * size < bbox[1] < 0.9 * size


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="size"):
        SynthFACS(size=8)
    with pytest.raises(ValueError, match="label"):
        SynthFACS(labels=("happiness", "joy"))
    with pytest.raises(IndexError):
        SynthFACS().sample(-1)


def test_labels_cycle_and_aus_follow_emfacs() -> None:
    g = SynthFACS(seed=0, labels=("happy", "sad", "surprised", "fear", "anger", "disgust",
                                  "neutral", "contempt"))  # fmt: skip
    n = 8 * 40
    seen_extra = 0
    for i in range(n):
        s = g.sample(i, render=False)
        assert s.label == g.labels[i % 8]
        active = s.active_aus() - {43}
        assert consistent_with(active, s.label), (i, s.label, s.au_intensity)
        for au, v in s.au_intensity.items():
            # no sample sits near the presence threshold by construction
            assert v >= 0.35 or v <= 0.15, (au, v)
            seen_extra += v <= 0.15
    assert seen_extra > 0  # sub-threshold traces happen


def test_landmarks_lie_on_drawn_face() -> None:
    """Landmarks are where the face is drawn: the eye interiors are bright sclera/iris, not
    background, and the skin at the nose differs from the background corner."""
    g = SynthFACS(size=224, seed=2)
    for i in range(5):
        s = g.sample(i)
        img = np.asarray(s.image, dtype=np.float64)
        corner = img[:6, :6].reshape(-1, 3).mean(0)
        nose = s.landmarks[29]
        assert np.abs(img[round(nose[1]), round(nose[0])] - corner).sum() > 20
        if s.au_intensity.get(43, 0) < 0.5:
            for eye in (range(36, 42), range(42, 48)):
                c = s.landmarks[list(eye)].mean(0)
                patch = img[round(c[1]) - 1 : round(c[1]) + 2, round(c[0]) - 4 : round(c[0]) + 5]
                assert patch.std() > 15  # iris/pupil/sclera contrast inside the eye


def _delta(au: int, a: float = 1.0) -> np.ndarray:
    return expression_shape(NEUTRAL_SHAPE, {au: a}) - NEUTRAL_SHAPE


def test_each_required_au_moves_the_right_landmarks() -> None:
    # y grows downward; the left/right brow & lid indices follow iBUG-68.
    assert (_delta(1)[[21, 22], 1] < -0.05).all()
    assert (_delta(2)[[17, 26], 1] < -0.05).all()
    d4 = _delta(4)
    assert (d4[17:27, 1] > 0).all() and d4[21, 0] > 0 and d4[22, 0] < 0
    assert (_delta(5)[[37, 38, 43, 44], 1] < -0.02).all()
    assert (_delta(7)[[40, 41, 46, 47], 1] < -0.015).all()
    d6 = _delta(6)
    assert (d6[[1, 2, 14, 15], 1] < -0.02).all() and (d6[[40, 41, 46, 47], 1] < 0).all()
    assert (_delta(9)[[31, 33, 35], 1] < -0.02).all()
    d12 = _delta(12)
    assert (d12[[48, 54], 1] < -0.04).all() and d12[48, 0] < 0 and d12[54, 0] > 0
    assert (_delta(15)[[48, 54], 1] > 0.03).all()
    d20 = _delta(20)
    assert d20[48, 0] < -0.04 and d20[54, 0] > 0.04
    assert _delta(25)[66, 1] - _delta(25)[62, 1] > 0.05
    d26 = _delta(26)
    assert d26[8, 1] > 0.1 and d26[57, 1] > 0.1 and abs(d26[0, 1]) < 1e-9
    assert _delta(17)[8, 1] < -0.04 and _delta(17)[57, 1] < -0.02
    closed = expression_shape(NEUTRAL_SHAPE, {43: 1.0})
    assert (closed[[41, 40, 47, 46], 1] - closed[[37, 38, 43, 44], 1] < 0.005).all()


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([a for a in SYNTH_AUS if a != 43]), st.floats(0.05, 1.0))
def test_displacement_is_linear_in_intensity(au: int, a: float) -> None:
    np.testing.assert_allclose(_delta(au, a), a * _delta(au, 1.0), atol=1e-12)


def test_unilateral_side() -> None:
    s = expression_shape(NEUTRAL_SHAPE, {12: 1.0}, side={12: -1}) - NEUTRAL_SHAPE
    assert s[48, 1] < -0.04 and abs(s[54, 1]) < 1e-12


def test_write_rafdb_layout(tmp_path) -> None:
    root = write_rafdb_layout(tmp_path / "raf", 12, size=112, seed=5, test_fraction=0.25)
    lines = (root / "EmoLabel" / "list_patition_label.txt").read_text().splitlines()
    assert len(lines) == 12
    train = [ln for ln in lines if ln.startswith("train_")]
    test = [ln for ln in lines if ln.startswith("test_")]
    assert len(train) == 9 and len(test) == 3
    assert train[0] == f"train_00001.jpg {RAFDB.code_of(RAFDB.names[0])}"
    assert test[0].startswith("test_0001.jpg ")
    for ln in lines:
        assert re.fullmatch(r"(train_\d{5}|test_\d{4})\.jpg [1-7]", ln), ln
        stem = ln.split()[0][:-4]
        with Image.open(root / "Image" / "aligned" / f"{stem}_aligned.jpg") as im:
            assert im.size == (112, 112) and im.mode == "RGB"
    ann = read_synth_annotations(root)
    g = SynthFACS(size=112, seed=5)
    for i, ln in enumerate(lines):
        name, code = ln.split()
        lm, aus, label = ann[name]
        s = g.sample(i, render=False)
        assert RAFDB.name_of_code(int(code)) == label == s.label
        np.testing.assert_array_equal(lm, s.landmarks)
        assert aus == pytest.approx(s.au_intensity)
    assert set(ann) == {ln.split()[0] for ln in lines}


def test_write_rafdb_layout_rejects_non_rafdb_labels(tmp_path) -> None:
    with pytest.raises(ValueError, match="RAF-DB"):
        write_rafdb_layout(tmp_path, 2, labels=("contempt",))


def test_presence_threshold_documented_value() -> None:
    s = SynthFACS(seed=0).sample(0, render=False)
    assert s.active_aus() == {a for a, v in s.au_intensity.items() if v >= PRESENCE_THRESHOLD}


def test_attach_synth_landmarks_reads_the_sidecar(tmp_path) -> None:
    from tag_model.datasets import load_rafdb
    from tag_model.synth import attach_synth_landmarks

    root = write_rafdb_layout(tmp_path / "raf", 6, size=64, seed=2, test_fraction=0.5)
    ann = read_synth_annotations(root)
    for split in ("train", "test"):
        ds = attach_synth_landmarks(load_rafdb(root, split), root)
        assert len(ds) == 3
        for row in ds:
            name = re.search(r"((?:train|test)_\d+)_aligned\.jpg$", row["path"]).group(1)
            np.testing.assert_array_equal(
                np.asarray(row["landmarks"], np.float32), ann[f"{name}.jpg"][0].astype(np.float32)
            )
