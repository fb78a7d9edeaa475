"""Image quality filter: face found, face large enough, image sharp enough.

Every rejection carries a reason and is counted (:attr:`QualityFilter.counts`), and the
rejected keys are listed (:attr:`QualityFilter.rejected`): nothing is dropped silently.

Sharpness is the variance of the Laplacian (Pech-Pacheco et al., 2000) of the image's luma
(ITU-R BT.601, 0-255) with the 4-neighbour kernel ``[[0,1,0],[1,-4,1],[0,1,0]]`` over the
interior pixels. It is measured on the face's bounding box (from the landmarks, or the
detector box) when there is one, else on the whole image. Typical values: a crisp 112 px
face crop scores in the hundreds; the same crop after a Gaussian blur of radius 2 scores
below 10. The default threshold is 15.

Face size is the shorter side of the face box (landmarks' bounding box, or the detector box)
in pixels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["REASONS", "QualityFilter", "QualityVerdict", "laplacian_variance"]

REASONS: tuple[str, ...] = ("unreadable_image", "no_face", "face_too_small", "blurry")
"""Rejection reasons, in the order they are checked."""


@dataclass(frozen=True)
class QualityVerdict:
    """The outcome of :meth:`QualityFilter.check`.

    Attributes:
        ok: accepted?
        reason: ``None`` if accepted, else one of :data:`REASONS`.
        detail: a human-readable explanation with the measured value.
        sharpness: variance of the Laplacian (``None`` if not measured).
        face_px: shorter side of the face box in pixels (``None`` if no face).
    """

    ok: bool
    reason: str | None
    detail: str = ""
    sharpness: float | None = None
    face_px: float | None = None


def _gray(image: Any) -> np.ndarray:
    from PIL import Image

    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"), dtype=np.float64)
    else:
        arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"expected an H×W or H×W×3 image, got shape {arr.shape}")
    return arr


def laplacian_variance(image: Any, box: Sequence[float] | None = None) -> float:
    """Variance of the Laplacian of ``image`` (PIL or array), optionally inside ``box`` (xyxy).

    Returns 0.0 for images (or boxes) smaller than 3×3.
    """
    g = _gray(image)
    if box is not None:
        h, w = g.shape
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = int(max(0, np.floor(x1))), int(min(w, np.ceil(x2)))
        y1, y2 = int(max(0, np.floor(y1))), int(min(h, np.ceil(y2)))
        g = g[y1:y2, x1:x2]
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


class QualityFilter:
    """Reject images without a face, with too small a face, or too blurry.

    Args:
        min_sharpness: minimum variance of the Laplacian (0-255 luma), see the module doc.
        min_face_px: minimum shorter side of the face box, in pixels.
        require_face: if ``False``, an image with no landmarks and no box is judged on
            sharpness alone (whole image) instead of being rejected as ``no_face``.

    Counters: ``counts["checked"]``, ``counts["accepted"]`` and one count per reason;
    ``rejected`` lists ``(key, reason, detail)`` for every rejection (``key`` is whatever
    the caller passed to :meth:`check`, e.g. a path).
    """

    def __init__(
        self, min_sharpness: float = 15.0, min_face_px: float = 40.0, require_face: bool = True
    ) -> None:
        if min_sharpness < 0 or min_face_px < 0:
            raise ValueError("min_sharpness and min_face_px must be >= 0")
        self.min_sharpness = float(min_sharpness)
        self.min_face_px = float(min_face_px)
        self.require_face = bool(require_face)
        self.counts: Counter[str] = Counter()
        self.rejected: list[tuple[Hashable, str, str]] = []

    def __repr__(self) -> str:
        return (
            f"QualityFilter(min_sharpness={self.min_sharpness}, min_face_px={self.min_face_px}, "
            f"require_face={self.require_face})"
        )

    def reset(self) -> None:
        """Clear the counters and the rejection list."""
        self.counts.clear()
        self.rejected.clear()

    def summary(self) -> dict[str, int]:
        """``{"checked", "accepted", <reason>...}`` with every reason present (0 if none)."""
        return {k: int(self.counts.get(k, 0)) for k in ("checked", "accepted", *REASONS)}

    def _reject(self, key: Hashable, reason: str, detail: str, **kw: Any) -> QualityVerdict:
        self.counts[reason] += 1
        self.rejected.append((key, reason, detail))
        return QualityVerdict(False, reason, detail, **kw)

    def check(
        self,
        image: Any,
        landmarks: np.ndarray | None = None,
        *,
        face_box: Sequence[float] | None = None,
        key: Hashable = None,
    ) -> QualityVerdict:
        """Judge one image; updates the counters. ``landmarks``: ``[68, 2]`` pixels or None."""
        self.counts["checked"] += 1
        try:
            gray = _gray(image)
        except Exception as exc:  # unreadable input is a rejection, not a crash
            return self._reject(key, "unreadable_image", f"cannot read image: {exc}")
        box: tuple[float, float, float, float] | None = None
        if landmarks is not None:
            lm = np.asarray(landmarks, dtype=np.float64)
            if lm.ndim == 2 and lm.shape[1] == 2 and len(lm) and np.isfinite(lm).all():
                box = (lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max())
        if box is None and face_box is not None:
            fb = [float(v) for v in face_box]
            if len(fb) == 4 and all(np.isfinite(fb)) and fb[2] > fb[0] and fb[3] > fb[1]:
                box = (fb[0], fb[1], fb[2], fb[3])
        face_px: float | None = None
        if box is None:
            if self.require_face:
                return self._reject(key, "no_face", "no face found (no usable landmarks or box)")
        else:
            face_px = float(min(box[2] - box[0], box[3] - box[1]))
            if face_px < self.min_face_px:
                return self._reject(
                    key,
                    "face_too_small",
                    f"face is {face_px:.1f} px < min_face_px={self.min_face_px:g}",
                    face_px=face_px,
                )
        sharp = laplacian_variance(gray, box)
        if sharp < self.min_sharpness:
            return self._reject(
                key,
                "blurry",
                f"variance of Laplacian {sharp:.2f} < min_sharpness={self.min_sharpness:g}",
                sharpness=sharp,
                face_px=face_px,
            )
        self.counts["accepted"] += 1
        return QualityVerdict(True, None, "", sharpness=sharp, face_px=face_px)
