"""AU detectors: one interface, image and/or landmarks -> probability per AU.

- :class:`GeometricAUDetector` — built in, on iBUG-68 landmarks.
- :class:`OpenFaceCSVDetector` / :func:`read_openface_aus` — OpenFace 2.0 CSV output.
- :class:`PyFeatDetector` — py-feat, if installed (imported lazily).
- :func:`load_detector` — the one ``--detector`` spec parser that ``tag-train traces`` and
  ``tag-eval run`` share (``geometric``, ``openface:CSV_OR_DIR``, ``pyfeat``, ``module:Class``).
"""

from tag_model.detectors._factory import (
    DETECTOR_KINDS,
    DetectorSpecError,
    LoadedDetector,
    load_detector,
)
from tag_model.detectors._geometric import (
    GEOMETRIC_D_MAX,
    GeometricAUDetector,
    geometric_measurements,
)
from tag_model.detectors._openface import (
    OpenFaceAUs,
    OpenFaceCSVDetector,
    OpenFaceFormatError,
    OpenFaceRow,
    read_openface_aus,
)
from tag_model.detectors._protocol import AUDetector
from tag_model.detectors._pyfeat import PyFeatDetector

__all__ = [
    "DETECTOR_KINDS",
    "GEOMETRIC_D_MAX",
    "AUDetector",
    "DetectorSpecError",
    "GeometricAUDetector",
    "LoadedDetector",
    "OpenFaceAUs",
    "OpenFaceCSVDetector",
    "OpenFaceFormatError",
    "OpenFaceRow",
    "PyFeatDetector",
    "geometric_measurements",
    "load_detector",
    "read_openface_aus",
]
