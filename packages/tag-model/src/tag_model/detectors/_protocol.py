"""The one interface every AU detector implements."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["AUDetector"]


@runtime_checkable
class AUDetector(Protocol):
    """Image and/or landmarks -> probability per AU.

    Attributes:
        supported_aus: the FACS numbers this detector can report.

    ``predict(image=None, landmarks=None)`` returns ``{au: probability in [0, 1]}`` for the
    AUs it could assess (a subset of ``supported_aus``); an empty dict means "no face /
    nothing assessed", never an exception for a face it cannot see. ``image`` is a
    ``PIL.Image`` or an ``H×W×3`` uint8 RGB array; ``landmarks`` an iBUG-68 ``[68, 2]``
    array in image pixels.
    """

    supported_aus: tuple[int, ...]

    def predict(
        self, image: Any = None, landmarks: np.ndarray | None = None
    ) -> dict[int, float]: ...
