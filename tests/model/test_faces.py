"""tag_model.faces: dlib landmarks on a real face, AU regions on them, landmark files."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tag_model.faces import (
    DlibUnavailableError,
    LandmarkFormatError,
    parse_affectnet_landmarks,
    read_affectnet_landmarks,
    read_openface_landmarks,
    shape_predictor_path,
    to_rgb_uint8,
)

# --------------------------------------------------------------------------- dlib


def _need_dlib() -> None:
    pytest.importorskip("dlib", reason="optional extra tag-model[dlib] not installed")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("optional extra tag-model[dlib] not installed (face_recognition_models)")


@pytest.fixture(scope="module")
def astronaut():
    """The astronaut image, its dlib detection and landmarks (the model loads once)."""
    _need_dlib()
    from skimage import data
    from tag_model.faces import detect_faces, detect_landmarks

    img = data.astronaut()
    return img, detect_faces(img), detect_landmarks(img)


def _expand(box: np.ndarray, frac: float) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    return box + np.array([-frac * w, -frac * h, frac * w, frac * h], np.float32)


# dlib's HOG box is tight: it cuts the chin and the top of the brows, so "inside the face"
# means inside the detector box grown by this fraction of its size on each side.
MARGIN = 0.15


def test_astronaut_detection(astronaut):
    _img, det, res = astronaut
    assert det.found and det.reason is None
    assert det.boxes.dtype == np.float32 and det.boxes.shape[1] == 4
    # sorted by area, the face first; the astronaut's face is in the top half of the image
    areas = (det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])
    assert np.all(np.diff(areas) <= 0)
    x1, y1, x2, y2 = det.largest
    assert 150 < x1 < x2 < 300 and 50 < y1 < y2 < 200
    assert res.found and res.reason is None
    np.testing.assert_array_equal(res.box, det.largest)


def test_astronaut_68_points_in_face_box(astronaut):
    from tag_model.faces import dlib_landmarks

    img, det, res = astronaut
    lm = res.landmarks
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    box = _expand(det.largest, MARGIN)
    assert np.all((lm[:, 0] >= box[0]) & (lm[:, 0] <= box[2]))
    assert np.all((lm[:, 1] >= box[1]) & (lm[:, 1] <= box[3]))
    # anatomy: eyes above the nose tip above the mouth above the chin; left before right
    assert lm[36:48, 1].mean() < lm[30, 1] < lm[48:68, 1].mean() < lm[8, 1]
    assert lm[36, 0] < lm[45, 0] and lm[48, 0] < lm[54, 0]
    # the public entry point agrees, on a PIL image too (cached model)
    from tag_model.faces import _dlib

    misses = _dlib._predictor.cache_info().misses
    np.testing.assert_array_equal(dlib_landmarks(Image.fromarray(img)), lm)
    assert _dlib._predictor.cache_info().misses == misses  # the model is not reloaded


def test_dlib_with_given_box(astronaut):
    from tag_model.faces import detect_landmarks

    img, det, res = astronaut
    given = detect_landmarks(img, box=det.largest)
    assert given.score is None
    np.testing.assert_allclose(given.landmarks, res.landmarks, atol=1.0)
    bad = detect_landmarks(img, box=[10, 10, 5, 5])
    assert bad.landmarks is None and "invalid face box" in bad.reason


def test_no_face_is_a_result_with_reason():
    _need_dlib()
    from tag_model.faces import detect_faces, detect_landmarks, dlib_landmarks

    gray = np.full((160, 160, 3), 128, np.uint8)
    assert dlib_landmarks(gray) is None
    res = detect_landmarks(Image.fromarray(gray))
    assert res.landmarks is None and res.n_faces == 0 and res.reason == "no face found"
    det = detect_faces(gray)
    assert not det.found and len(det) == 0 and det.largest is None and det.reason
    empty = detect_landmarks(np.zeros((0, 0, 3), np.uint8))
    assert empty.landmarks is None and empty.reason == "empty image"


def test_region_boxes_on_astronaut(astronaut):
    tag_kernels = pytest.importorskip("tag_kernels")
    landmarks_to_regions = tag_kernels.landmarks_to_regions
    table = tag_kernels.IBUG68_REGIONS
    img, det, res = astronaut
    lm = res.landmarks
    h, w = img.shape[:2]
    boxes = np.asarray(landmarks_to_regions(lm[None], np.array([[w, h]], np.float32)))[0]
    assert boxes.shape == (len(table), 4)
    # every region is a real box inside the face
    face = _expand(det.largest, MARGIN)
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    assert np.all(boxes[:, 0] >= face[0]) and np.all(boxes[:, 2] <= face[2])
    assert np.all(boxes[:, 1] >= face[1]) and np.all(boxes[:, 3] <= face[3])

    def region(au: int) -> np.ndarray:
        return boxes[table.region_of(au)]

    # AU12 (lip corner puller) contains the mouth corners 48 and 54
    b12 = region(12)
    for k in (48, 54):
        assert b12[0] <= lm[k, 0] <= b12[2] and b12[1] <= lm[k, 1] <= b12[3], k
    # AU1 / AU2 (inner / outer brow raiser) lie above the eyes
    eye_top = lm[36:48, 1].min()
    for au in (1, 2):
        assert region(au)[3] <= eye_top, au
    # the inner-brow region covers the inner brow ends, the outer one the outer ends
    assert region(1)[0] <= lm[21, 0] and lm[22, 0] <= region(1)[2]
    assert region(2)[0] <= lm[17, 0] and lm[26, 0] <= region(2)[2]
    # AU17 (chin raiser) lies below the lower lip
    assert region(17)[1] >= lm[55:60, 1].max()
    assert region(17)[0] <= lm[8, 0] <= region(17)[2]


def test_missing_dlib_names_the_extra(monkeypatch):
    from tag_model.faces import _dlib

    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    with pytest.raises(DlibUnavailableError, match=r"tag-model\[dlib\]"):
        _dlib._import_dlib()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DlibUnavailableError, match=r"pip install 'tag-model\[dlib\]'"):
        shape_predictor_path()
    assert issubclass(DlibUnavailableError, ImportError)


def test_shape_predictor_path_found_without_importing_package(tmp_path):
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face_recognition_models not installed")
    before = "face_recognition_models" in sys.modules
    p = shape_predictor_path()
    assert p.name == "shape_predictor_68_face_landmarks.dat" and p.stat().st_size > 1_000_000
    assert ("face_recognition_models" in sys.modules) == before
    with pytest.raises(FileNotFoundError, match=r"nope\.dat"):
        shape_predictor_path(tmp_path / "nope.dat")


def test_licence_warning_is_documented():
    import tag_model.faces as faces
    from tag_model.faces import dlib_landmarks

    for doc in (faces.__doc__, dlib_landmarks.__doc__, shape_predictor_path.__doc__):
        assert "300-W" in doc and "commercial" in doc


def test_to_rgb_uint8_inputs():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = to_rgb_uint8(g)
    assert out.shape == (3, 4, 3) and np.all(out[..., 2] == g)
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert to_rgb_uint8(rgba).shape == (2, 2, 3)
    assert to_rgb_uint8(Image.new("L", (5, 3))).shape == (3, 5, 3)
    with pytest.raises(TypeError, match="float"):
        to_rgb_uint8(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(TypeError, match="list"):
        to_rgb_uint8([[1, 2]])
    with pytest.raises(ValueError, match=r"\(4, 4, 2\)"):
        to_rgb_uint8(np.zeros((4, 4, 2), np.uint8))


# --------------------------------------------------------------------------- OpenFace


def _openface_header(sequence: bool = True) -> list[str]:
    """The column layout of OpenFace 2.0 FeatureExtraction (or FaceLandmarkImg) output."""
    cols = (
        ["frame", "face_id", "timestamp", "confidence", "success"]
        if sequence
        else [
            "face",
            "confidence",
        ]
    )
    cols += ["gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z"]
    cols += ["gaze_angle_x", "gaze_angle_y"]
    cols += [f"eye_lmk_x_{i}" for i in range(56)] + [f"eye_lmk_y_{i}" for i in range(56)]
    cols += [f"eye_lmk_{a}_{i}" for a in "XYZ" for i in range(56)]
    cols += ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    cols += [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
    cols += [f"{a}_{i}" for a in "XYZ" for i in range(68)]
    cols += ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"] + [f"p_{i}" for i in range(34)]
    aus = [1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45]
    cols += [f"AU{a:02d}_r" for a in aus] + [f"AU{a:02d}_c" for a in [*aus[:-1], 28, 45]]
    return cols


def _openface_row(cols: list[str], meta: dict[str, float], pts: np.ndarray) -> list[str]:
    vals = []
    for c in cols:
        if c in meta:
            vals.append(meta[c])
        elif c.startswith("x_"):
            vals.append(pts[int(c[2:]), 0])
        elif c.startswith("y_"):
            vals.append(pts[int(c[2:]), 1])
        else:
            vals.append(-7.5)  # eye landmarks etc. must not be read as x_/y_
    return [f"{v:g}" if isinstance(v, float) else str(v) for v in vals]


def _write_openface(path: Path, cols: list[str], rows: list[list[str]]) -> None:
    # OpenFace writes ", " between fields, so every header after the first starts with a space
    path.write_text(", ".join(cols) + "\n" + "".join(", ".join(r) + "\n" for r in rows))


def _pts(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(10, 200, (68, 2)).round(3).astype(np.float32)


def test_openface_sequence_csv(tmp_path, caplog):
    cols = _openface_header()
    p1, p3 = _pts(1), _pts(3)
    rows = [
        _openface_row(cols, {"frame": 1, "face_id": 0, "timestamp": 0.0, "confidence": 0.98, "success": 1}, p1),
        _openface_row(cols, {"frame": 2, "face_id": 0, "timestamp": 0.033, "confidence": 0.0, "success": 0}, np.zeros((68, 2))),
        _openface_row(cols, {"frame": 3, "face_id": 0, "timestamp": 0.067, "confidence": 0.9, "success": 1}, p3),
    ]  # fmt: skip
    path = tmp_path / "video.csv"
    _write_openface(path, cols, rows)
    with caplog.at_level(logging.WARNING, logger="tag_model.faces._files"):
        of = read_openface_landmarks(path)
    assert len(of) == 2
    np.testing.assert_array_equal(of.frame, [1, 3])
    np.testing.assert_array_equal(of.face_id, [0, 0])
    np.testing.assert_allclose(of.confidence, [0.98, 0.9], rtol=1e-6)
    assert of.landmarks.shape == (2, 68, 2) and of.landmarks.dtype == np.float32
    np.testing.assert_allclose(of.landmarks[0], p1, atol=1e-3)
    np.testing.assert_allclose(of.get(3), p3, atol=1e-3)
    assert of.get(2) is None  # failed frame is reported, not used
    assert [(f.frame, f.line) for f in of.failed] == [(2, 3)]
    assert "success == 0" in caplog.text


def test_openface_image_csv(tmp_path):
    cols = _openface_header(sequence=False)
    p = _pts(7)
    path = tmp_path / "img.csv"
    _write_openface(path, cols, [_openface_row(cols, {"face": 1, "confidence": 0.8}, p)])
    of = read_openface_landmarks(path)
    assert len(of) == 1 and of.failed == ()
    np.testing.assert_array_equal(of.face_id, [1])
    np.testing.assert_allclose(of.get(0, face_id=1), p, atol=1e-3)


def test_openface_bad_files(tmp_path):
    cols = _openface_header()
    good = {"frame": 1, "face_id": 0, "timestamp": 0.0, "confidence": 0.9, "success": 1}
    row = _openface_row(cols, good, _pts(0))
    bad = list(row)
    bad[cols.index("y_5")] = "abc"
    path = tmp_path / "bad.csv"
    _write_openface(path, cols, [row, bad])
    with pytest.raises(LandmarkFormatError) as ei:
        read_openface_landmarks(path)
    assert ei.value.line == 3 and ei.value.value == "abc" and "y_5" in str(ei.value)
    assert str(path) in str(ei.value) and isinstance(ei.value, ValueError)

    no_lm = [c for c in cols if c != "x_40"]
    _write_openface(path, no_lm, [])
    with pytest.raises(LandmarkFormatError, match="x_40"):
        read_openface_landmarks(path)

    short = row[:-3]
    _write_openface(path, cols, [short])
    with pytest.raises(LandmarkFormatError, match=r"line 2|:2:"):
        read_openface_landmarks(path)


# --------------------------------------------------------------------------- AffectNet


def _affectnet_field(pts: np.ndarray) -> str:
    return ";".join(f"{v:.2f}" for v in pts.reshape(-1))


def test_parse_affectnet_landmarks():
    p = _pts(5)
    out = parse_affectnet_landmarks(_affectnet_field(p))
    assert out.shape == (68, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, p, atol=0.006)
    np.testing.assert_allclose(parse_affectnet_landmarks(_affectnet_field(p) + ";"), out)
    assert out[0, 0] == pytest.approx(float(f"{p[0, 0]:.2f}"))  # x first, then y
    assert out[0, 1] == pytest.approx(float(f"{p[0, 1]:.2f}"))
    assert parse_affectnet_landmarks("") is None
    assert parse_affectnet_landmarks("NULL") is None
    with pytest.raises(ValueError, match="136"):
        parse_affectnet_landmarks("1;2;3")
    with pytest.raises(ValueError, match="'zz'"):
        parse_affectnet_landmarks(";".join(["1"] * 135 + ["zz"]))
    with pytest.raises(ValueError, match="finite"):
        parse_affectnet_landmarks(";".join(["1"] * 135 + ["inf"]))


def test_read_affectnet_landmarks(tmp_path):
    p0, p1 = _pts(10), _pts(11)
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    path = tmp_path / "training.csv"
    path.write_text(
        header
        + f"689/a.jpg,10,12,100,101,{_affectnet_field(p0)},1,0.5,0.2\n"
        + f"2/b.png,0,0,50,50,{_affectnet_field(p1)},0,0.0,0.1\n"
        + "3/c.jpg,0,0,50,50,,0,0.0,0.1\n"
    )
    out = read_affectnet_landmarks(path)
    assert list(out) == ["689/a.jpg", "2/b.png", "3/c.jpg"]
    np.testing.assert_allclose(out["2/b.png"], p1, atol=0.006)
    assert out["3/c.jpg"] is None
    path.write_text(header + "1/x.jpg,0,0,5,5,1;2;3,0,0,0\n")
    with pytest.raises(LandmarkFormatError) as ei:
        read_affectnet_landmarks(path)
    assert ei.value.line == 2 and ei.value.value == "1;2;3"
