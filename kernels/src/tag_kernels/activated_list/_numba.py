"""Numba backend of ``activated_list``: one parallel loop over faces, an insertion sort per row."""

from __future__ import annotations

import numba
import numpy as np

from ..regions._table import RegionTable

__all__ = ["activated_list_numba"]


@numba.njit(parallel=True, cache=True)
def _activated_kernel(
    p, boxes, aus, au_region, top_k, thr, out_au, out_p, out_box
):  # pragma: no cover
    B, A = p.shape
    for b in numba.prange(B):
        n = 0  # slots filled, kept sorted by descending prob then ascending column
        for k in range(top_k):
            out_au[b, k] = -1
            out_p[b, k] = 0.0
            for c in range(4):
                out_box[b, k, c] = 0.0
        cols = np.empty(top_k, dtype=np.int64)
        for j in range(A):
            v = p[b, j]
            if not v >= thr:  # also rejects NaN
                continue
            # later columns lose ties, so insert after every slot with prob >= v
            pos = n
            while pos > 0 and out_p[b, pos - 1] < v:
                pos -= 1
            if pos >= top_k:
                continue
            last = min(n, top_k - 1)
            for s in range(last, pos, -1):
                out_p[b, s] = out_p[b, s - 1]
                cols[s] = cols[s - 1]
            out_p[b, pos] = v
            cols[pos] = j
            n = min(n + 1, top_k)
        for s in range(n):
            j = cols[s]
            out_au[b, s] = aus[j]
            r = au_region[j]
            for c in range(4):
                out_box[b, s, c] = boxes[b, r, c]


def activated_list_numba(
    au_prob: np.ndarray,
    region_boxes: np.ndarray,
    table: RegionTable,
    top_k: int,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numba backend: ``float32[B, A]``, ``float32[B, R, 4]`` (C-contiguous) -> NumPy outputs."""
    pk = table.packed
    B = au_prob.shape[0]
    out_au = np.empty((B, top_k), dtype=np.int32)
    out_p = np.empty((B, top_k), dtype=np.float32)
    out_box = np.empty((B, top_k, 4), dtype=np.float32)
    if B and top_k:
        _activated_kernel(
            au_prob,
            region_boxes,
            pk.aus,
            pk.au_region,
            top_k,
            np.float32(threshold),
            out_au,
            out_p,
            out_box,
        )
    return out_au, out_p, out_box
