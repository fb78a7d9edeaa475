"""Faces: dlib HOG detection, iBUG-68 landmarks, and landmarks read from files.

Landmarks are ``np.ndarray[68, 2]`` float32 ``(x, y)`` image pixels in iBUG-68 order
(0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth).

dlib is an optional extra: ``pip install 'tag-model[dlib]'`` (``dlib-bin`` and
``face-recognition-models``). **Licence:** the packaged 68-point shape predictor was trained on
the iBUG 300-W data set, whose licence allows research, non-commercial use only; do not use
:func:`dlib_landmarks` in a commercial product. File readers (OpenFace, AffectNet) need no
extra.

Example::

    from skimage import data
    from tag_model.faces import dlib_landmarks, detect_landmarks
    pts = dlib_landmarks(data.astronaut())  # np.ndarray[68, 2] or None
    res = detect_landmarks(gray_image)      # res.landmarks is None, res.reason == "no face found"
"""

from ._dlib import (
    DLIB_EXTRA_HINT,
    DlibUnavailableError,
    FaceDetection,
    LandmarkResult,
    detect_faces,
    detect_landmarks,
    dlib_landmarks,
    shape_predictor_path,
)
from ._files import (
    LandmarkFormatError,
    OpenFaceFailure,
    OpenFaceLandmarks,
    parse_affectnet_landmarks,
    read_affectnet_landmarks,
    read_openface_landmarks,
)
from ._image import to_rgb_uint8

__all__ = [
    "DLIB_EXTRA_HINT",
    "DlibUnavailableError",
    "FaceDetection",
    "LandmarkFormatError",
    "LandmarkResult",
    "OpenFaceFailure",
    "OpenFaceLandmarks",
    "detect_faces",
    "detect_landmarks",
    "dlib_landmarks",
    "parse_affectnet_landmarks",
    "read_affectnet_landmarks",
    "read_openface_landmarks",
    "shape_predictor_path",
    "to_rgb_uint8",
]
