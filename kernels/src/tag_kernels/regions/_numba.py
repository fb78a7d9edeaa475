"""Numba backend for ``landmarks_to_regions``: ``njit(parallel=True)``, one face per iteration.

Computes exactly the recipe of ``_reference.py`` in float32, one region at a time.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._table import RegionTable

__all__ = ["landmarks_to_regions_numba"]


@numba.njit(parallel=True, cache=True, fastmath=False)
def _regions_kernel(lm, size, index, count, coef, ui, uj, out):  # pragma: no cover - jitted
    B = lm.shape[0]
    R = index.shape[0]
    half = np.float32(0.5)
    zero = np.float32(0.0)
    for b in numba.prange(B):
        ex = lm[b, ui, 0] - lm[b, uj, 0]
        ey = lm[b, ui, 1] - lm[b, uj, 1]
        d = np.float32(math.sqrt(ex * ex + ey * ey))
        w = size[b, 0]
        h = size[b, 1]
        face_ok = math.isfinite(d) and d > zero and math.isfinite(w) and w > zero
        face_ok = face_ok and math.isfinite(h) and h > zero
        for r in range(R):
            for c in range(4):
                out[b, r, c] = zero
            if not face_ok:
                continue
            ok = True
            xmin = np.float32(np.inf)
            xmax = np.float32(-np.inf)
            ymin = np.float32(np.inf)
            ymax = np.float32(-np.inf)
            for p in range(count[r]):
                k = index[r, p]
                x = lm[b, k, 0]
                y = lm[b, k, 1]
                if not (math.isfinite(x) and math.isfinite(y)):
                    ok = False
                    break
                xmin = min(xmin, x)
                xmax = max(xmax, x)
                ymin = min(ymin, y)
                ymax = max(ymax, y)
            if not ok:
                continue
            x1 = xmin + coef[r, 0] * d
            x2 = xmax + coef[r, 1] * d
            y1 = ymin + coef[r, 2] * d
            y2 = ymax + coef[r, 3] * d
            mw = coef[r, 4] * d
            mh = coef[r, 5] * d
            if x2 - x1 < mw:
                cx = half * (x1 + x2)
                x1 = cx - half * mw
                x2 = cx + half * mw
            if y2 - y1 < mh:
                cy = half * (y1 + y2)
                y1 = cy - half * mh
                y2 = cy + half * mh
            if not (
                math.isfinite(x1) and math.isfinite(x2) and math.isfinite(y1) and math.isfinite(y2)
            ):
                continue
            out[b, r, 0] = min(max(x1, zero), w)
            out[b, r, 1] = min(max(y1, zero), h)
            out[b, r, 2] = min(max(x2, zero), w)
            out[b, r, 3] = min(max(y2, zero), h)


def landmarks_to_regions_numba(
    landmarks: np.ndarray, image_size: np.ndarray, table: RegionTable
) -> np.ndarray:
    """Numba backend. ``landmarks`` ``float32[B, L, 2]`` and ``image_size`` ``float32[B, 2]``
    (C-contiguous; the public function converts) -> ``float32[B, R, 4]``."""
    p = table.packed
    out = np.empty((landmarks.shape[0], len(table), 4), dtype=np.float32)
    _regions_kernel(
        landmarks, image_size, p.index, p.count, p.coef, p.unit_points[0], p.unit_points[1], out
    )
    return out
