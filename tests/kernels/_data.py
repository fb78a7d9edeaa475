"""Random and adversarial batches shared by the kernel tests and benchmarks."""

from __future__ import annotations

import math

import numpy as np
from tag_kernels.regions import RegionTable

BACKENDS = ("numba", "jax", "triton")


def random_boxes(
    rng: np.random.Generator, shape: tuple[int, ...], scale: float = 100.0
) -> np.ndarray:
    xy = rng.uniform(0, scale, (*shape, 2))
    wh = rng.uniform(scale * 0.02, scale * 0.6, (*shape, 2))
    return np.concatenate([xy, xy + wh], -1).astype(np.float32)


def adversarial(rng: np.random.Generator, boxes: np.ndarray, frac: float = 0.15) -> np.ndarray:
    """Replace a fraction of boxes by zero-area, inverted, NaN, inf and huge boxes."""
    out = boxes.copy()
    flat = out.reshape(-1, 4)
    bad = [
        lambda b: np.array([b[0], b[1], b[0], b[3]]),  # zero width
        lambda b: np.array([b[2], b[3], b[0], b[1]]),  # inverted
        lambda b: np.array([np.nan, b[1], b[2], b[3]]),
        lambda b: np.array([b[0], b[1], np.inf, b[3]]),
        lambda b: np.array([-np.inf, -np.inf, np.inf, np.inf]),
        lambda b: b * 1e6 / 100.0,  # around 1e6
        lambda b: np.array([0.0, 0.0, 0.0, 0.0]),
        lambda b: np.array([3e38, 3e38, 3.4e38, 3.4e38]),  # area overflows float32
    ]
    for i in np.flatnonzero(rng.random(len(flat)) < frac):
        flat[i] = bad[rng.integers(len(bad))](flat[i].astype(np.float64)).astype(np.float32)
    return out


def make_batch(
    seed: int,
    B: int,
    K: int,
    M: int,
    *,
    n_au: int = 5,
    pad: float = 0.2,
    bad: float = 0.0,
    near: bool = True,
) -> dict[str, np.ndarray]:
    """A reward batch; ``near`` makes predictions jittered copies of detector boxes."""
    rng = np.random.default_rng(seed)
    ref_boxes = random_boxes(rng, (B, M))
    ref_au = rng.integers(1, n_au + 1, (B, M)).astype(np.int32)
    ref_au[rng.random((B, M)) < pad] = -1
    ref_prob = rng.uniform(0, 1, (B, M)).astype(np.float32)
    pred_boxes = random_boxes(rng, (B, K))
    if near and M:
        src = rng.integers(0, M, (B, K))
        base = np.take_along_axis(ref_boxes, src[..., None], axis=1)
        pred_boxes = (base + rng.normal(0, 6, base.shape)).astype(np.float32)
        pred_au = np.take_along_axis(ref_au, src, axis=1).clip(0)
        swap = rng.random((B, K)) < 0.3
        pred_au[swap] = rng.integers(0, n_au + 1, swap.sum())
    else:
        pred_au = rng.integers(0, n_au + 1, (B, K))
    pred_au = pred_au.astype(np.int32)
    pred_au[rng.random((B, K)) < pad] = -1
    if bad:
        pred_boxes = adversarial(rng, pred_boxes, bad)
        ref_boxes = adversarial(rng, ref_boxes, bad)
        ref_prob[rng.random((B, M)) < bad] = np.nan
        ref_prob[rng.random((B, M)) < bad] = -0.5
    return dict(
        pred_boxes=pred_boxes,
        pred_au=pred_au,
        ref_boxes=ref_boxes,
        ref_au=ref_au,
        ref_prob=ref_prob,
    )


def regions_python(landmarks: np.ndarray, image_size: np.ndarray, table: RegionTable) -> list:
    """Pure-Python per-face loop, the way a data script would do it: one face, one region at a
    time, on Python lists. Returns ``[[(x1, y1, x2, y2)] * R] * B``."""
    i, j = table.unit_points
    out = []
    for lm, (w, h) in zip(landmarks.tolist(), image_size.tolist()):
        d = math.dist(lm[i], lm[j])
        face_ok = math.isfinite(d) and d > 0 and math.isfinite(w) and w > 0
        face_ok = face_ok and math.isfinite(h) and h > 0
        boxes = []
        for reg in table.regions:
            pts = [lm[k] for k in reg.landmarks]
            if not face_ok or not all(math.isfinite(v) for p in pts for v in p):
                boxes.append((0.0, 0.0, 0.0, 0.0))
                continue
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            x1 = min(xs) + (reg.dx - reg.pad_x) * d
            x2 = max(xs) + (reg.dx + reg.pad_x) * d
            y1 = min(ys) + (reg.dy - reg.pad_y) * d
            y2 = max(ys) + (reg.dy + reg.pad_y) * d
            if x2 - x1 < reg.min_w * d:
                c = (x1 + x2) / 2
                x1, x2 = c - reg.min_w * d / 2, c + reg.min_w * d / 2
            if y2 - y1 < reg.min_h * d:
                c = (y1 + y2) / 2
                y1, y2 = c - reg.min_h * d / 2, c + reg.min_h * d / 2
            boxes.append(
                (min(max(x1, 0), w), min(max(y1, 0), h), min(max(x2, 0), w), min(max(y2, 0), h))
            )
        out.append(boxes)
    return out


def activated_python(
    p: np.ndarray, boxes: np.ndarray, table: RegionTable, top_k: int, thr: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``activated_list``'s semantics, one face at a time, in plain Python (independent of the
    reference): the test's oracle and the benchmark's per-face baseline."""
    B = p.shape[0]
    au = np.full((B, top_k), -1, np.int32)
    pr = np.zeros((B, top_k), np.float32)
    bx = np.zeros((B, top_k, 4), np.float32)
    thr32 = np.float32(thr)
    for b in range(B):
        act = [(j, p[b, j]) for j in range(p.shape[1]) if p[b, j] >= thr32]  # NaN fails >=
        act.sort(key=lambda t: (-t[1], t[0]))  # stable semantics: prob desc, column asc
        for s, (j, v) in enumerate(act[:top_k]):
            au[b, s] = table.aus[j]
            pr[b, s] = v
            bx[b, s] = boxes[b, table.region_of(table.aus[j])]
    return au, pr, bx
