"""Adapter for py-feat (https://py-feat.org), imported only when used."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PyFeatDetector"]

_AU_NAME = re.compile(r"^AU(\d+)$")
PYFEAT_HINT = "PyFeatDetector needs the optional package py-feat: pip install py-feat"


class PyFeatDetector:
    """An :class:`~tag_model.detectors.AUDetector` that runs a py-feat ``Detector``.

    py-feat is heavy (PyTorch models downloaded from its hub) and optional: it is imported
    when this class is instantiated, and a missing install raises ``ImportError`` naming
    ``py-feat``. Pass ``detector=`` to reuse a configured py-feat detector; otherwise
    ``feat.Detector(**kwargs)`` is built (``feat.Detectorv2`` on versions without it).

    ``predict(image)`` writes the image to a temporary PNG, runs ``detect_image`` (py-feat
    <= 0.6) or ``detect(..., data_type="image")`` (0.7+), and returns the ``AUxx`` columns
    of the face with the highest ``FaceScore``, clipped to [0, 1]. No face gives ``{}``.
    """

    def __init__(self, detector: Any = None, **kwargs: Any) -> None:
        try:
            import feat  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ImportError(PYFEAT_HINT) from exc
        if detector is None:
            factory = getattr(feat, "Detector", None) or getattr(feat, "Detectorv2", None)
            if factory is None:
                raise ImportError(f"{PYFEAT_HINT} (installed 'feat' has no Detector class)")
            detector = factory(**kwargs)
        self._detector = detector
        self.supported_aus: tuple[int, ...] = tuple(
            getattr(detector, "supported_aus", None)
            or (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 17, 20, 23, 24, 25, 26, 28, 43)
        )

    def _run(self, path: str) -> Any:
        det = self._detector
        if hasattr(det, "detect_image"):
            return det.detect_image(path)
        return det.detect(path, data_type="image")

    def predict(self, image: Any = None, landmarks: np.ndarray | None = None) -> dict[int, float]:
        """AU -> probability for the most confident face in ``image`` (``{}`` if none)."""
        if image is None:
            raise ValueError("PyFeatDetector.predict needs an image")
        from PIL import Image

        if isinstance(image, (str, Path)):
            return self._parse(self._run(str(image)))
        pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        with tempfile.TemporaryDirectory() as tmp:
            p = str(Path(tmp) / "face.png")
            pil.convert("RGB").save(p)
            return self._parse(self._run(p))

    def _parse(self, fex: Any) -> dict[int, float]:
        if fex is None or len(fex) == 0:
            return {}
        aus = getattr(fex, "aus", None)
        table = aus if aus is not None and len(getattr(aus, "columns", ())) else fex
        cols = [(c, int(m.group(1))) for c in table.columns if (m := _AU_NAME.match(str(c)))]
        if not cols:
            return {}
        row = 0
        if "FaceScore" in getattr(fex, "columns", ()):
            scores = np.asarray(fex["FaceScore"], dtype=float)
            if np.isfinite(scores).any():
                row = int(np.nanargmax(scores))
        out: dict[int, float] = {}
        for c, au in cols:
            v = float(np.asarray(table[c], dtype=float)[row])
            if np.isfinite(v):
                out[au] = min(max(v, 0.0), 1.0)
        return out
