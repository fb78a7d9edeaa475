"""AU detectors: the geometric detector's per-AU F1 on SynthFACS, invariances, adapters."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tag_model.detectors import (
    GEOMETRIC_D_MAX,
    AUDetector,
    GeometricAUDetector,
    OpenFaceCSVDetector,
    PyFeatDetector,
    geometric_measurements,
)
from tag_model.synth import NEUTRAL_SHAPE, PRESENCE_THRESHOLD, SynthFACS, expression_shape

N_EVAL = 840  # 120 per RAF-DB class


@pytest.fixture(scope="module")
def synth_eval():
    g = SynthFACS(size=112, seed=2024)
    samples = [g.sample(i, render=False) for i in range(N_EVAL)]
    lm = np.stack([s.landmarks for s in samples])
    return samples, lm


def _f1(gt: np.ndarray, pred: np.ndarray) -> tuple[float, int, int, int]:
    tp = int((gt & pred).sum())
    fp = int((~gt & pred).sum())
    fn = int((gt & ~pred).sum())
    return (2 * tp / max(2 * tp + fp + fn, 1)), tp, fp, fn


def test_geometric_f1_per_au_on_synthfacs(synth_eval, capsys) -> None:
    samples, lm = synth_eval
    det = GeometricAUDetector()
    probs = det.predict_batch(lm)
    assert probs.shape == (N_EVAL, len(det.supported_aus))
    assert ((probs >= 0) & (probs <= 1)).all()
    rows = []
    for j, au in enumerate(det.supported_aus):
        gt = np.array([s.au_intensity.get(au, 0.0) >= PRESENCE_THRESHOLD for s in samples])
        f1, tp, fp, fn = _f1(gt, probs[:, j] >= 0.5)
        rows.append((au, int(gt.sum()), tp, fp, fn, f1))
    with capsys.disabled():
        print(f"\nGeometricAUDetector on SynthFACS (seed 2024, n={N_EVAL}, threshold 0.5)")
        print("AU    pos   tp   fp   fn    F1")
        for au, pos, tp, fp, fn, f1 in rows:
            print(f"AU{au:<3}{pos:5d}{tp:5d}{fp:5d}{fn:5d}  {f1:.3f}")
    for au, pos, *_, f1 in rows:
        assert pos >= 15, f"AU{au}: too few positives ({pos}) to measure F1"
        assert f1 >= 0.8, f"AU{au}: F1 {f1:.3f} < 0.8"


def test_neutral_template_scores_low_and_full_intensity_scores_high() -> None:
    det = GeometricAUDetector()
    p0 = det.predict(landmarks=NEUTRAL_SHAPE * 200 + 50)
    assert set(p0) == set(det.supported_aus)
    assert max(p0.values()) < 0.05
    for au in det.supported_aus:
        shape = expression_shape(NEUTRAL_SHAPE, {au: 1.0})
        r = det.intensity_batch(shape)[0, det.supported_aus.index(au)]
        assert r == pytest.approx(1.0, abs=0.1), f"AU{au}: d_max calibration off ({r:.2f})"
        assert det.predict(landmarks=shape * 150)[au] > 0.99


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 200),
    st.floats(-0.5, 0.5),
    st.floats(20, 400),
    st.floats(-300, 300),
    st.floats(-300, 300),
)
def test_similarity_invariance(
    index: int, angle: float, scale: float, tx: float, ty: float
) -> None:
    lm = SynthFACS(seed=9).sample(index, render=False).landmarks.astype(np.float64)
    c, s = np.cos(angle), np.sin(angle)
    moved = scale * lm @ np.array([[c, s], [-s, c]]) + np.array([tx, ty])
    det = GeometricAUDetector()
    np.testing.assert_allclose(det.predict_batch(moved), det.predict_batch(lm), atol=1e-6)


def test_custom_neutral_and_options() -> None:
    det = GeometricAUDetector(neutral=NEUTRAL_SHAPE * 3.0, aus=(12, 15), midpoint={12: 0.5})
    assert det.supported_aus == (12, 15)
    shape = expression_shape(NEUTRAL_SHAPE, {12: 0.4})
    p = det.predict(landmarks=shape)
    assert p[12] < 0.5 < GeometricAUDetector().predict(landmarks=shape)[12]
    with pytest.raises(ValueError, match="does not support"):
        GeometricAUDetector(aus=(10,))
    with pytest.raises(ValueError, match="softness"):
        GeometricAUDetector(softness=0.0)


def test_bad_landmarks() -> None:
    det = GeometricAUDetector()
    with pytest.raises(ValueError, match=r"\[68, 2\]"):
        det.predict(landmarks=np.zeros((5, 2)))
    nan = NEUTRAL_SHAPE.copy()
    nan[3] = np.nan
    assert det.predict(landmarks=nan) == {}
    assert det.predict(landmarks=np.zeros((68, 2))) == {}  # zero IOD
    assert (det.predict_batch(np.zeros((2, 68, 2))) == 0).all()
    m = geometric_measurements(np.zeros((68, 2)))
    assert np.isnan(m[12]).all()


def test_documented_d_max_covers_supported() -> None:
    assert set(GEOMETRIC_D_MAX) == set(GeometricAUDetector.SUPPORTED)


def test_protocol_conformance(tmp_path) -> None:
    assert isinstance(GeometricAUDetector(), AUDetector)
    csv = tmp_path / "of.csv"
    csv.write_text("frame, face_id, success, AU12_r, AU12_c\n1, 0, 1, 2.0, 1\n")
    assert isinstance(OpenFaceCSVDetector(csv), AUDetector)


def test_pyfeat_missing_names_the_package(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "feat", None)  # import feat -> ImportError
    with pytest.raises(ImportError, match="py-feat"):
        PyFeatDetector()


class _FakeFex:
    """Minimal stand-in for py-feat's Fex DataFrame."""

    def __init__(self, data: dict[str, list[float]]) -> None:
        self._d = data
        self.columns = list(data)

    def __len__(self) -> int:
        return len(next(iter(self._d.values())))

    def __getitem__(self, k: str) -> list[float]:
        return self._d[k]

    @property
    def aus(self) -> _FakeFex:
        return _FakeFex({k: v for k, v in self._d.items() if k.startswith("AU")})


def test_pyfeat_adapter_with_fake_module(monkeypatch) -> None:
    calls = []

    class Detector:
        def __init__(self, **kw) -> None:
            calls.append(kw)

        def detect_image(self, path: str) -> _FakeFex:
            calls.append(path)
            return _FakeFex(
                {"FaceScore": [0.4, 0.99], "AU12": [0.1, 0.93], "AU04": [0.7, 1.3], "x": [1, 2]}
            )

    monkeypatch.setitem(sys.modules, "feat", types.SimpleNamespace(Detector=Detector))
    det = PyFeatDetector(device="cpu")
    assert calls[0] == {"device": "cpu"}
    out = det.predict(SynthFACS(seed=0).sample(0).image)
    assert out == {12: pytest.approx(0.93), 4: 1.0}  # most confident face, clipped
    assert calls[1].endswith(".png")


def test_image_only_uses_dlib_landmarks() -> None:
    pytest.importorskip("dlib")
    from skimage import data

    det = GeometricAUDetector()
    p = det.predict(image=data.astronaut())  # a real, smiling face with parted lips
    assert p[12] > 0.5 and p[25] > 0.5 and p[15] < 0.5 and p[4] < 0.5
    assert det.predict(image=np.full((96, 96, 3), 127, np.uint8)) == {}


# ---------------------------------------------------------------- the shared --detector factory


class EchoDetector:
    """A ``module:Class`` detector for the factory test."""

    supported_aus = (6, 12)

    def predict(self, image=None, landmarks=None):
        return {12: 0.9} if landmarks is not None else {}


def test_factory_specs_and_one_call_shape(tmp_path) -> None:
    from tag_model.detectors import LoadedDetector, load_detector

    geo = load_detector("geometric")
    assert isinstance(geo, LoadedDetector) and geo.thread_safe
    assert geo.describe() == {"name": "geometric", "spec": "geometric", "settings": {}}
    shape = expression_shape(NEUTRAL_SHAPE, {12: 1.0}) * 150
    assert geo.predict(landmarks=shape, index=0, path="a.jpg")[12] > 0.99
    assert geo.predict(image=None, landmarks=None) == {}
    # one CSV: frame k is row k-1
    csv = tmp_path / "seq.csv"
    csv.write_text("frame, face_id, success, AU12_r, AU12_c\n1, 0, 1, 3.0, 1\n2, 0, 1, 0.0, 0\n")
    one = load_detector(f"openface:{csv}")
    assert one.describe()["settings"] == {
        "path": str(csv.resolve()),
        "layout": "one_csv_frame_per_row",
    }
    assert one.predict(index=0)[12] > 0.9 and one.predict(index=1)[12] < 0.1
    assert one.predict(index=5) == {}
    # a folder of per-image CSVs, named by the image stem
    folder = tmp_path / "of"
    folder.mkdir()
    (folder / "img_7.csv").write_text("frame, success, AU04_r\n1, 1, 2.5\n")
    per = load_detector(f"openface:{folder}")
    assert per.predict(index=3, path="Image/aligned/img_7.jpg")[4] > 0.9
    assert per.predict(index=4, path="Image/aligned/other.jpg") == {}
    # module:Class
    mod = load_detector("tests.model.test_detectors:EchoDetector")
    assert mod.name == "tests.model.test_detectors:EchoDetector" and mod.supported_aus == (6, 12)
    assert mod.predict(landmarks=shape) == {12: 0.9}


def test_predict_many_equals_predict_face_by_face(synth_eval, tmp_path) -> None:
    from tag_model.detectors import load_detector

    _, lm = synth_eval
    faces: list = [lm[k] * (0.5 + k % 3) for k in range(40)]  # several scales
    faces[3] = None  # no landmarks
    faces[7] = np.zeros((68, 2))  # degenerate: nothing seen
    faces[11] = np.full((68, 2), np.nan)
    geo = load_detector("geometric")
    many = geo.predict_many([None] * len(faces), faces)
    one = [geo.predict(landmarks=f) for f in faces]
    assert many == one  # bit-identical, whatever the batch holds
    assert many[3] == {} and many[7] == {} and many[11] == {} and len(many[0]) > 5
    # the same face gives the same floats in any batch (resumed builds batch differently)
    assert geo.predict_many([None, None], [faces[0], faces[1]])[1] == many[1]
    csv = tmp_path / "seq.csv"
    csv.write_text("frame, success, AU12_r\n1, 1, 3.0\n2, 1, 0.0\n")
    of = load_detector(f"openface:{csv}")
    assert of.predict_many([None, None], [None, None], indices=[1, 0]) == [
        of.predict(index=1),
        of.predict(index=0),
    ]
    with pytest.raises(ValueError, match="2 images, 1 landmark sets"):
        geo.predict_many([None, None], [faces[0]])
    with pytest.raises(ValueError, match=r"\[68, 2\], got shape \(5, 2\) \(face 1\)"):
        geo.predict_many([None, None], [faces[0], np.zeros((5, 2))])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dlib", "unknown detector 'dlib'; use 'geometric'"),
        ("openface:", "openface needs a path"),
        ("openface:/no/such/dir", "not found: /no/such/dir; run OpenFace 2.0 first"),
        ("no_such_module_xyz:Det", "cannot import module 'no_such_module_xyz'"),
        ("tests.model.test_detectors:Nope", "has no 'Nope'"),
        ("pyfeat:fast", "pyfeat takes no argument"),
    ],
)
def test_factory_bad_specs_are_named(spec: str, message: str) -> None:
    from tag_model.detectors import DetectorSpecError, load_detector

    with pytest.raises(DetectorSpecError, match=message.replace("(", r"\(")):
        load_detector(spec)


def test_factory_openface_folder_without_csvs_and_bad_csv(tmp_path) -> None:
    from tag_model.detectors import DetectorSpecError, load_detector

    with pytest.raises(DetectorSpecError, match=r"no \*\.csv in .*FeatureExtraction"):
        load_detector(f"openface:{tmp_path}")
    bad = tmp_path / "bad.csv"
    bad.write_text("frame, AU12_r\n1, high\n")
    with pytest.raises(DetectorSpecError, match=r"cannot read OpenFace CSV .*bad\.csv:2"):
        load_detector(f"openface:{bad}")


def test_factory_pyfeat_not_installed_names_the_install(monkeypatch) -> None:
    from tag_model.detectors import DetectorSpecError, load_detector

    monkeypatch.setitem(sys.modules, "feat", None)  # import feat -> ImportError
    with pytest.raises(DetectorSpecError, match=r"pip install py-feat.*model weights"):
        load_detector("pyfeat")


def test_factory_pyfeat_weights_absent_offline_names_the_download(monkeypatch) -> None:
    """py-feat installed but its weights not cached and no network: its Detector() raises
    (as huggingface_hub does offline); the error says what to download."""
    from tag_model.detectors import DetectorSpecError, load_detector

    class Detector:
        def __init__(self, **kw) -> None:
            raise OSError(
                "We couldn't connect to 'https://huggingface.co' to load the files, and "
                "couldn't find them in the cached files (py-feat/retinaface)."
            )

    monkeypatch.setitem(sys.modules, "feat", types.SimpleNamespace(Detector=Detector))
    with pytest.raises(DetectorSpecError) as err:
        load_detector("pyfeat")
    msg = str(err.value)
    assert "could not load its models (OSError" in msg and "huggingface.co" in msg
    assert "downloads from the Hugging Face hub on first use" in msg


def test_tag_eval_uses_the_factory_and_warns_on_another_detector(tmp_path) -> None:
    from tag_eval._detectors import Detector, detector_mismatch
    from tag_eval._records import EvalInputError

    csv = tmp_path / "of.csv"
    csv.write_text("frame, face_id, success, AU12_r, AU12_c\n1, 0, 1, 3.0, 1\n")
    of = Detector(f"openface:{csv}")
    assert of.describe()["name"] == "openface" and of.predict(None, None, 0, None)[12] > 0.9
    msg = detector_mismatch("geometric", of)
    assert msg and "'geometric'" in msg and f"openface:{csv}" in msg
    assert detector_mismatch("openface", of) is None and detector_mismatch(None, of) is None
    with pytest.raises(EvalInputError, match="unknown detector 'dlib'"):
        Detector("dlib")
