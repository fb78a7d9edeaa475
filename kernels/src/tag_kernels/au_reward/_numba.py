"""Numba backend of the AU-grounding reward (CPU, parallel over chunks of rows).

Per row: build the candidate list in ``(k, m)`` order, sort it once by a packed 64-bit key
``(descending IoU bits, k * M + m)`` (unique keys, so the order is total and ties resolve to the
smaller ``k`` then ``m``), then sweep it, skipping used rows and columns, stopping as soon as
``min(|P|, |D|)`` pairs are matched. Each worker takes a chunk of rows and allocates its scratch
arrays once.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..box_iou._numba import iou_valid, valid_box

__all__ = ["PARALLEL_MIN_SLOTS", "au_reward_numba"]

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)


def _kernel_py(
    pb, pa, rb, ra, rp, beta2, class_aware, empty_value, out_r, out_p, out_rc, out_n, n_chunks
):
    B = pb.shape[0]
    K = pb.shape[1]
    M = rb.shape[1]
    b2 = np.float32(beta2)
    ev = np.float32(empty_value)
    # class-aware: AU 0 (a box that names no AU) is an inspection, not a prediction
    p_lo = 1 if class_aware else 0
    for c in nb.prange(n_chunks):
        lo = c * B // n_chunks
        hi = (c + 1) * B // n_chunks
        tile = np.empty(K * M, dtype=np.float32)
        keys = np.empty(K * M, dtype=np.int64)
        used_k = np.empty(K, dtype=np.bool_)
        used_m = np.empty(M, dtype=np.bool_)
        ok_m = np.empty(M, dtype=np.bool_)
        head = np.full(64, -1, dtype=np.int64)  # class-aware buckets: AU & 63 -> first m
        nxt = np.empty(M, dtype=np.int64)  # next m in the same bucket
        w = np.empty(M, dtype=np.float32)
        bits = tile.view(np.int32)
        for i in range(lo, hi):
            n_p = 0
            for k in range(K):
                used_k[k] = False
                if pa[i, k] >= p_lo:
                    n_p += 1
            n_d = 0
            wmax = _F0
            for m in range(M):
                used_m[m] = False
                wm = _F0
                if ra[i, m] >= 0:
                    n_d += 1
                    p = rp[i, m]
                    if (p - p) == 0 and p > _F0:
                        wm = p
                w[m] = wm
                if wm > wmax:
                    wmax = wm
            if n_p == 0 or n_d == 0:
                v = ev if (n_p == 0 and n_d == 0) else _F0
                out_r[i] = v
                out_p[i] = v
                out_rc[i] = v
                out_n[i] = 0
                continue
            sum_w = _F0
            for m in range(M):
                if wmax > _F0:
                    w[m] = w[m] / wmax
                else:
                    w[m] = _F1 if ra[i, m] >= 0 else _F0
                sum_w += w[m]
            for m in range(M):
                ok_m[m] = ra[i, m] >= 0 and valid_box(
                    rb[i, m, 0], rb[i, m, 1], rb[i, m, 2], rb[i, m, 3]
                )
            if class_aware:
                # Bucket the usable detector slots by AU, so each prediction visits only its
                # own AU's slots (ascending m within a bucket is not needed: sort keys are unique).
                for m in range(M - 1, -1, -1):
                    if ok_m[m]:
                        h = ra[i, m] & 63
                        nxt[m] = head[h]
                        head[h] = m
            # Candidates, each with a unique sort key (descending IoU bits, then k * M + m).
            n = 0
            for k in range(K):
                ak = pa[i, k]
                if ak < p_lo:
                    continue
                ax1, ay1, ax2, ay2 = pb[i, k, 0], pb[i, k, 1], pb[i, k, 2], pb[i, k, 3]
                if not valid_box(ax1, ay1, ax2, ay2):
                    continue
                m = head[ak & 63] if class_aware else 0
                while m >= 0 and m < M:
                    if ok_m[m] and (not class_aware or ra[i, m] == ak):
                        v = iou_valid(
                            ax1, ay1, ax2, ay2, rb[i, m, 0], rb[i, m, 1], rb[i, m, 2], rb[i, m, 3]
                        )
                        if v > _F0:
                            idx = k * M + m
                            tile[idx] = v
                            keys[n] = (
                                (np.int64(0x7FFFFFFF) - np.int64(bits[idx])) << 32
                            ) | np.int64(idx)
                            n += 1
                    m = nxt[m] if class_aware else m + 1
            if class_aware:
                for m in range(M):
                    if ok_m[m]:
                        head[ra[i, m] & 63] = -1
            if n <= 32:  # insertion sort: cheaper than a library sort call for short lists
                for a in range(1, n):
                    key = keys[a]
                    b = a - 1
                    while b >= 0 and keys[b] > key:
                        keys[b + 1] = keys[b]
                        b -= 1
                    keys[b + 1] = key
            else:
                keys[:n].sort()
            ks = keys
            need = min(n_p, n_d)
            got = 0
            s_iou = _F0
            s_wiou = _F0
            for j in range(n):
                idx = ks[j] & np.int64(0xFFFFFFFF)
                k = idx // M
                m = idx - k * M
                if used_k[k] or used_m[m]:
                    continue
                used_k[k] = True
                used_m[m] = True
                v = tile[idx]
                s_iou += v
                s_wiou += v * w[m]
                got += 1
                if got == need:
                    break
            prec = s_iou / np.float32(n_p)
            rec = s_wiou / sum_w if sum_w > _F0 else _F0
            den = b2 * prec + rec
            r = (_F1 + b2) * prec * rec / den if den > _F0 else _F0
            out_r[i] = min(max(r, _F0), _F1)
            out_p[i] = min(max(prec, _F0), _F1)
            out_rc[i] = min(max(rec, _F0), _F1)
            out_n[i] = got


_kernel_parallel = nb.njit(parallel=True, cache=True)(_kernel_py)
_kernel_serial = nb.njit(_kernel_py)  # prange runs as range; not cached: it would share
# the parallel variant's on-disk cache entry (same function), which served the serial code for both.

#: Below this many candidate slots (B * K * M) one thread beats waking the pool.
PARALLEL_MIN_SLOTS = 1 << 19


def au_reward_numba(
    pred_boxes: np.ndarray,
    pred_au: np.ndarray,
    ref_boxes: np.ndarray,
    ref_au: np.ndarray,
    ref_prob: np.ndarray,
    beta: float,
    class_aware: bool,
    empty_value: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """C-contiguous ``float32[B,K,4], int32[B,K], float32[B,M,4], int32[B,M], float32[B,M]``
    -> ``(reward, precision, recall, matched)``, each ``[B]``."""
    B = pred_boxes.shape[0]
    out_r = np.empty(B, dtype=np.float32)
    out_p = np.empty(B, dtype=np.float32)
    out_rc = np.empty(B, dtype=np.float32)
    out_n = np.empty(B, dtype=np.int32)
    if B:
        K, M = pred_boxes.shape[1], ref_boxes.shape[1]
        parallel = B * max(K, 1) * max(M, 1) >= PARALLEL_MIN_SLOTS and nb.get_num_threads() > 1
        kernel = _kernel_parallel if parallel else _kernel_serial
        n_chunks = min(B, nb.get_num_threads() * 4) if parallel else 1
        kernel(pred_boxes, pred_au, ref_boxes, ref_au, ref_prob, float(beta) ** 2,
               bool(class_aware), float(empty_value), out_r, out_p, out_rc, out_n, n_chunks)  # fmt: skip
    return out_r, out_p, out_rc, out_n
