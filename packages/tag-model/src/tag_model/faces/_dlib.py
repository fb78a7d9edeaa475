"""dlib HOG face detection and the iBUG-68 shape predictor.

Licence warning
---------------
The 68-point shape predictor shipped by ``face-recognition-models``
(``shape_predictor_68_face_landmarks.dat``) was trained by Davis King on the iBUG 300-W
data set. The 300-W images and annotations are licensed for **research, non-commercial use
only**, so this model must not be used in commercial products, whatever the licence of the
Python packages that carry it. dlib's HOG face detector itself is not affected.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._image import ImageLike, to_rgb_uint8

__all__ = [
    "DLIB_EXTRA_HINT",
    "DlibUnavailableError",
    "FaceDetection",
    "LandmarkResult",
    "detect_faces",
    "detect_landmarks",
    "dlib_landmarks",
    "shape_predictor_path",
]

DLIB_EXTRA_HINT = "pip install 'tag-model[dlib]'  (installs dlib-bin and face-recognition-models)"
_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


class DlibUnavailableError(ImportError):
    """dlib or the face-recognition-models model files are not installed."""


@dataclass(frozen=True)
class FaceDetection:
    """Faces found by dlib's HOG detector in one image.

    Attributes:
        boxes: ``np.ndarray[N, 4]`` float32, xyxy image pixels, clamped to the image and sorted
            by descending area (the largest face first).
        scores: ``np.ndarray[N]`` float32, the detector's SVM scores (higher is surer).
        image_size: ``(w, h)`` of the image.
        reason: ``None`` when at least one face was found, else why not (``"no face found"``,
            ``"empty image"``).
    """

    boxes: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]
    reason: str | None = None

    @property
    def found(self) -> bool:
        return self.boxes.shape[0] > 0

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def largest(self) -> np.ndarray | None:
        """The largest face box ``np.ndarray[4]`` (float32 xyxy) or None."""
        return self.boxes[0] if self.found else None


@dataclass(frozen=True)
class LandmarkResult:
    """iBUG-68 landmarks of the largest face, or the reason there are none.

    Attributes:
        landmarks: ``np.ndarray[68, 2]`` float32 ``(x, y)`` image pixels, or None. Points of
            a face at the border may lie slightly outside the image (the predictor
            extrapolates); they are not clamped.
        box: the face box used, ``np.ndarray[4]`` float32 xyxy, or None.
        score: detector score of that face (None when the box was given by the caller).
        n_faces: how many faces the detector found.
        reason: None on success, else a short reason such as ``"no face found"``.
    """

    landmarks: np.ndarray | None
    box: np.ndarray | None = None
    score: float | None = None
    n_faces: int = 0
    reason: str | None = None

    @property
    def found(self) -> bool:
        return self.landmarks is not None


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DlibUnavailableError(
            f"dlib is not installed, so face detection and landmarks are unavailable: {DLIB_EXTRA_HINT}"
        ) from exc
    return dlib


def shape_predictor_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Locate ``shape_predictor_68_face_landmarks.dat``.

    With ``path`` given, that file is used (it must exist). Otherwise the file is looked up in
    the installed ``face_recognition_models`` package *without importing it* (its
    ``__init__`` needs ``pkg_resources``, which recent setuptools no longer ships): the package
    folder comes from ``importlib.util.find_spec``.

    The model's training data (iBUG 300-W) is licensed for non-commercial research only.

    Raises:
        DlibUnavailableError: the package or the file is missing (names the extra to install).
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"shape predictor model not found: {p}")
        return p
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DlibUnavailableError(
            f"face_recognition_models is not installed, so the 68-point model is missing: {DLIB_EXTRA_HINT}"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "models" / _PREDICTOR_FILE
        if candidate.is_file():
            return candidate
    raise DlibUnavailableError(
        f"face_recognition_models is installed but {_PREDICTOR_FILE} is missing from "
        f"{list(spec.submodule_search_locations)}; reinstall it: {DLIB_EXTRA_HINT}"
    )


@functools.lru_cache(maxsize=1)
def _detector() -> Any:
    return _import_dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=4)
def _predictor(path: str) -> Any:
    return _import_dlib().shape_predictor(path)


def detect_faces(image: ImageLike, *, upsample: int = 1, threshold: float = 0.0) -> FaceDetection:
    """Detect frontal faces with dlib's HOG + linear SVM detector.

    Args:
        image: PIL image or RGB ``uint8`` array ``[H, W, 3]`` (see ``to_rgb_uint8``).
        upsample: times the image is upsampled before detection. HOG finds faces of about
            80x80 px and up; each upsampling halves that (and costs ~4x time).
        threshold: detection score threshold (dlib's ``adjust_threshold``); raise it to drop
            weak detections.

    Returns:
        A :class:`FaceDetection`; "no face" is a result with ``reason`` set, not an exception.

    Raises:
        DlibUnavailableError: dlib is missing.
    """
    arr = to_rgb_uint8(image)
    h, w = arr.shape[:2]
    empty = np.zeros((0, 4), np.float32)
    if h == 0 or w == 0:
        return FaceDetection(empty, np.zeros(0, np.float32), (w, h), reason="empty image")
    rects, scores, _ = _detector().run(arr, int(upsample), float(threshold))
    if len(rects) == 0:
        return FaceDetection(empty, np.zeros(0, np.float32), (w, h), reason="no face found")
    boxes = np.array(
        [[r.left(), r.top(), r.right(), r.bottom()] for r in rects], dtype=np.float32
    ).reshape(-1, 4)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    sc = np.asarray(scores, dtype=np.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = np.lexsort((-sc, -area))  # by area, then score, both descending
    return FaceDetection(boxes[order], sc[order], (w, h), reason=None)


def detect_landmarks(
    image: ImageLike,
    *,
    box: Any = None,
    upsample: int = 1,
    threshold: float = 0.0,
    predictor_path: str | os.PathLike[str] | None = None,
) -> LandmarkResult:
    """The 68 iBUG points of the largest face, with the reason when there is none.

    Args:
        image: PIL image or RGB ``uint8`` array ``[H, W, 3]``.
        box: optional face box ``[4]`` xyxy pixels (e.g. AffectNet's face box, or the whole
            image for tightly aligned crops where HOG fails); detection is then skipped.
        upsample, threshold: passed to :func:`detect_faces`.
        predictor_path: a shape-predictor ``.dat`` other than the packaged one.

    The packaged predictor was trained on iBUG 300-W, whose licence forbids commercial use.
    """
    arr = to_rgb_uint8(image)
    dlib = _import_dlib()
    predictor = _predictor(str(shape_predictor_path(predictor_path)))
    h, w = arr.shape[:2]
    if h == 0 or w == 0:
        return LandmarkResult(None, reason="empty image")
    score: float | None = None
    n_faces = 1
    if box is None:
        det = detect_faces(arr, upsample=upsample, threshold=threshold)
        if not det.found:
            return LandmarkResult(None, n_faces=0, reason=det.reason)
        face = det.boxes[0]
        score = float(det.scores[0])
        n_faces = len(det)
    else:
        face = np.asarray(box, dtype=np.float32).reshape(4)
        if not np.all(np.isfinite(face)) or face[2] <= face[0] or face[3] <= face[1]:
            return LandmarkResult(None, reason=f"invalid face box {face.tolist()}")
    rect = dlib.rectangle(
        round(float(face[0])), round(float(face[1])), round(float(face[2])), round(float(face[3]))
    )
    shape = predictor(arr, rect)
    pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
    if pts.shape != (68, 2):
        return LandmarkResult(
            None,
            box=face,
            score=score,
            n_faces=n_faces,
            reason=f"predictor returned {pts.shape[0]} points, expected 68",
        )
    return LandmarkResult(pts, box=face.astype(np.float32), score=score, n_faces=n_faces)


def dlib_landmarks(image: ImageLike, **kwargs: Any) -> np.ndarray | None:
    """iBUG-68 landmarks ``np.ndarray[68, 2]`` float32 of the largest face, or None.

    ``image`` is a PIL image or an RGB ``uint8`` array ``[H, W, 3]``. Keyword arguments go to
    :func:`detect_landmarks` (``box``, ``upsample``, ``threshold``, ``predictor_path``); use
    that function to learn *why* no face was found. The detector and predictor are loaded
    once and cached.

    Needs the optional extra: ``pip install 'tag-model[dlib]'``. The packaged model was
    trained on iBUG 300-W, which does not allow commercial use.
    """
    return detect_landmarks(image, **kwargs).landmarks
