"""Numba backend of batched box IoU (CPU, parallel over batch rows)."""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["box_iou_numba", "iou_one", "iou_valid", "valid_box"]

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)


@nb.njit(inline="always", cache=True)
def _valid(x1: np.float32, y1: np.float32, x2: np.float32, y2: np.float32) -> bool:
    # (v - v) == 0 is False for NaN and +-inf.
    finite = (x1 - x1) == 0 and (y1 - y1) == 0 and (x2 - x2) == 0 and (y2 - y2) == 0
    return finite and x2 > x1 and y2 > y1


@nb.njit(inline="always", cache=True)
def valid_box(x1: np.float32, y1: np.float32, x2: np.float32, y2: np.float32) -> bool:
    """Finite, with positive width and height."""
    return _valid(x1, y1, x2, y2)


@nb.njit(inline="always", cache=True)
def iou_valid(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2) -> np.float32:
    """IoU of two float32 boxes already known to be valid, exactly as the reference computes it."""
    iw = min(ax2, bx2) - max(ax1, bx1)
    ih = min(ay2, by2) - max(ay1, by1)
    if iw < _F0:
        iw = _F0
    if ih < _F0:
        ih = _F0
    inter = iw * ih
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    union = area_a + area_b - inter
    if not union > _F0:
        return _F0
    iou = inter / union
    if (iou - iou) != 0:
        return _F0
    if iou > _F1:
        return _F1
    return iou


@nb.njit(inline="always", cache=True)
def iou_one(a: np.ndarray, b: np.ndarray) -> np.float32:
    """IoU of two float32 ``[4]`` boxes, exactly as the reference computes it."""
    if not (_valid(a[0], a[1], a[2], a[3]) and _valid(b[0], b[1], b[2], b[3])):
        return _F0
    return iou_valid(a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3])


@nb.njit(parallel=True, cache=True)
def _box_iou_kernel(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    for i in nb.prange(a.shape[0]):
        for k in range(a.shape[1]):
            for m in range(b.shape[1]):
                out[i, k, m] = iou_one(a[i, k], b[i, m])


def box_iou_numba(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``float32[B, K, 4], float32[B, M, 4] -> float32[B, K, M]`` (C-contiguous inputs)."""
    out = np.empty((a.shape[0], a.shape[1], b.shape[1]), dtype=np.float32)
    if out.size:
        _box_iou_kernel(a, b, out)
    return out
