"""The AU detector that ``tag-eval run --detector`` names, one call per sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tag_eval._records import EvalInputError

__all__ = ["Detector"]


class Detector:
    """The AU detector chosen by ``--detector``.

    ``geometric``: :class:`tag_model.detectors.GeometricAUDetector` on the landmarks.
    ``openface:FILE.csv``: one OpenFace 2.0 CSV whose frame ``k`` (1-based, as
    ``FeatureExtraction`` numbers an image sequence) is dataset sample ``k - 1``.
    ``openface:DIR``: one CSV per image, ``DIR/<image stem>.csv`` (``FaceLandmarkImg
    -out_dir`` output). A sample with no CSV row gets no activated AUs.
    """

    def __init__(self, spec: str) -> None:
        from tag_model import detectors

        self.spec = spec
        self.kind = spec.split(":", 1)[0]
        self._detectors = detectors
        self._per_image: dict[str, Any] = {}
        if spec == "geometric":
            self.impl = detectors.GeometricAUDetector()
        elif self.kind == "openface" and ":" in spec:
            self.path = Path(spec.split(":", 1)[1])
            if not self.path.exists():
                raise EvalInputError(f"OpenFace CSV (or folder of CSVs) not found: {self.path}")
            self.impl = None if self.path.is_dir() else self._load(self.path)
        else:
            raise EvalInputError(
                f"unknown detector {spec!r}; use 'geometric', 'openface:FILE.csv' or 'openface:DIR'"
            )

    def _load(self, csv_path: Path) -> Any:
        try:
            return self._detectors.OpenFaceCSVDetector(csv_path)
        except (OSError, ValueError) as exc:
            raise EvalInputError(f"cannot read OpenFace CSV {csv_path}: {exc}") from exc

    def predict(
        self, image: Any, landmarks: np.ndarray | None, index: int, path: str | None
    ) -> dict[int, float]:
        """AU number -> probability for dataset sample ``index`` (``{}``: nothing detected)."""
        if self.kind == "geometric":
            if landmarks is None:
                return {}
            return self.impl.predict(image=image, landmarks=landmarks)
        if self.impl is not None:
            return self.impl.predict(frame=index + 1)
        stem = Path(path).stem if path else f"{index:06d}"
        csv_path = self.path / f"{stem}.csv"
        if not csv_path.exists():
            return {}
        if stem not in self._per_image:
            self._per_image[stem] = self._load(csv_path)
        return self._per_image[stem].predict()
