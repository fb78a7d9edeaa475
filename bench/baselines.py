"""Pure-Python per-sample scorers: how RL repos (VLM-R1, Perception-R1 style) score grounding today.

One completion at a time, with Python loops: IoU for every pair, sort the candidate pairs,
sweep them greedily. Same semantics as :func:`tag_kernels.au_reward.au_grounding_reward`, so the
benchmarks check agreement before they time anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Box = Sequence[float]


def iou_py(a: Box, b: Box) -> float:
    """IoU of two ``xyxy`` boxes; 0 for degenerate boxes."""
    for box in (a, b):
        if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
            return 0.0
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    if union <= 0:
        return 0.0
    v = inter / union
    return min(max(v, 0.0), 1.0) if math.isfinite(v) else 0.0


def score_one(
    pred: list[tuple[int, Box]],
    ref: list[tuple[int, float, Box]],
    *,
    beta: float = 1.0,
    class_aware: bool = True,
    empty_value: float = 1.0,
) -> float:
    """Reward of one completion: ``pred`` is ``[(au, box)]``, ``ref`` is ``[(au, prob, box)]``.

    Class-aware, a box with AU 0 (an inspection, no AU named) is not a prediction.
    """
    if class_aware:
        pred = [(a, bx) for a, bx in pred if a != 0]
    if not pred and not ref:
        return empty_value
    if not pred or not ref:
        return 0.0
    cands = []
    for k, (pa, pb) in enumerate(pred):
        for m, (ra, _, rb) in enumerate(ref):
            if class_aware and pa != ra:
                continue
            v = iou_py(pb, rb)
            if v > 0:
                cands.append((-v, k, m))
    cands.sort()
    used_k: set[int] = set()
    used_m: set[int] = set()
    matched: dict[int, float] = {}
    for neg, k, m in cands:
        if k in used_k or m in used_m:
            continue
        used_k.add(k)
        used_m.add(m)
        matched[m] = -neg
    w = [p if math.isfinite(p) and p > 0 else 0.0 for _, p, _ in ref]
    if max(w) <= 0:
        w = [1.0] * len(ref)
    precision = sum(matched.values()) / len(pred)
    recall = sum(w[m] * v for m, v in matched.items()) / sum(w)
    b2 = beta * beta
    den = b2 * precision + recall
    return (1 + b2) * precision * recall / den if den > 0 else 0.0


def to_python_samples(batch: dict[str, np.ndarray]) -> tuple[list, list]:
    """Padded arrays -> per-sample Python lists, the input a per-sample scorer sees."""
    preds, refs = [], []
    for i in range(batch["pred_au"].shape[0]):
        preds.append(
            [
                (int(a), [float(v) for v in bx])
                for a, bx in zip(batch["pred_au"][i], batch["pred_boxes"][i])
                if a >= 0
            ]
        )
        refs.append(
            [
                (int(a), float(p), [float(v) for v in bx])
                for a, p, bx in zip(batch["ref_au"][i], batch["ref_prob"][i], batch["ref_boxes"][i])
                if a >= 0
            ]
        )
    return preds, refs


def score_all(preds: list, refs: list, **kw: float) -> list[float]:
    """The per-sample loop."""
    return [score_one(p, r, **kw) for p, r in zip(preds, refs)]
