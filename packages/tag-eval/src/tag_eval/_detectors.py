"""The AU detector that ``tag-eval run --detector`` names, one call per sample.

The spec is parsed by :func:`tag_model.detectors.load_detector`, the same factory
``tag-train traces --detector`` uses, so evaluation scores against the detector the training
traces were built with (see :func:`detector_mismatch`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tag_eval._records import EvalInputError

__all__ = ["Detector", "detector_mismatch"]


class Detector:
    """The AU detector chosen by ``--detector`` (``geometric``, ``openface:FILE.csv``,
    ``openface:DIR``, ``pyfeat`` or ``module:Class``; see :mod:`tag_model.detectors`).

    ``openface:FILE.csv``: frame ``k`` (1-based) is dataset sample ``k - 1``.
    ``openface:DIR``: one CSV per image, ``DIR/<image stem>.csv``; a sample with no CSV row
    gets no activated AUs.
    """

    def __init__(self, spec: str) -> None:
        from tag_model.detectors import DetectorSpecError, load_detector

        self.spec = spec
        self.kind = spec.split(":", 1)[0]
        try:
            self.loaded = load_detector(spec)
        except DetectorSpecError as exc:
            raise EvalInputError(str(exc)) from exc
        self.name = self.loaded.name
        self.impl = self.loaded.impl

    def describe(self) -> dict[str, Any]:
        """``{"name", "spec", "settings"}`` of the detector."""
        return self.loaded.describe()

    def predict(
        self, image: Any, landmarks: np.ndarray | None, index: int, path: str | None
    ) -> dict[int, float]:
        """AU number -> probability for dataset sample ``index`` (``{}``: nothing detected)."""
        from tag_model.detectors import DetectorSpecError

        try:
            return self.loaded.predict(image=image, landmarks=landmarks, index=index, path=path)
        except DetectorSpecError as exc:
            raise EvalInputError(str(exc)) from exc


def detector_mismatch(trained_with: str | None, detector: Detector) -> str | None:
    """A warning when ``detector`` is not the one a model's training traces used.

    ``trained_with`` is the ``detector`` field of the checkpoint's ``tag_settings.json``
    (a detector name such as ``geometric`` or ``openface``); ``None`` (unknown) never warns.
    """
    if not trained_with or trained_with == detector.name:
        return None
    return (
        f"the model's training traces were built with the {trained_with!r} AU detector, but "
        f"it is scored here against {detector.spec!r}: grounding metrics compare it with "
        "another reference (pass --detector with the detector of its traces to compare like "
        "with like)"
    )
