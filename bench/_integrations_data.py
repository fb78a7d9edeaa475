"""The data and the per-sample baseline of ``bench_integrations.py``, importable without
pytest (the in-verl benchmark runs them inside verl's own environment).

``make_data``: realistic TAG responses (~6 boxes, ~600 characters, 10 % truncated, 20 % wrong
answers) with their ground-truth JSON strings. ``compute_score_one``: one response the
per-sample way (``parse_trace``, the adapter's conversion, the plain-torch reference reward
with B=1), as verl's naive reward manager calls a per-response function.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from tag_kernels.au_reward._reference import au_grounding_reward_reference
from tag_model.au import canonical_label
from tag_model.backbones import get_adapter
from tag_model.grounding import TraceStep, parse_trace, render_trace
from tag_train.integrations import GroundTruth

__all__ = ["FAMILY", "LABELS", "B", "compute_score_one", "make_data", "per_sample"]

B = 4096
FAMILY = "qwen2_vl"
LABELS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 17, 20, 23, 25, 26)


def make_data(n: int = B, seed: int = 0) -> dict:
    """Realistic responses (~6 boxes, ~600 characters, 10 % truncated, 20 % wrong answers)
    and their ground-truth JSON strings."""
    rng = np.random.default_rng(seed)
    texts, gts = [], []
    for i in range(n):
        w, h = int(rng.integers(100, 640)), int(rng.integers(100, 640))
        act, steps = [], []
        for au in rng.choice(_AUS, size=6, replace=False):
            x1, y1 = rng.uniform(0, 0.7 * w), rng.uniform(0, 0.7 * h)
            box = [x1, y1, x1 + rng.uniform(8, 0.3 * w), y1 + rng.uniform(8, 0.3 * h)]
            act.append({"au": int(au), "prob": float(rng.uniform(0.5, 1.0)), "box": box})
            if rng.random() < 0.85:
                m = np.round((np.array(box) + rng.normal(0, 5, 4)) / [w, h, w, h] * 1000)
                m = np.clip(m, 0, 1000)
                if m[0] < m[2] and m[1] < m[3]:
                    steps.append(TraceStep("the region", "a visible change", (int(au),), tuple(m)))
        if not steps:
            steps.append(TraceStep("the face", "calm", (), (10, 10, 990, 990)))
        label = LABELS[i % len(LABELS)]
        answer = label if rng.random() < 0.8 else LABELS[(i + 2) % len(LABELS)]
        text = render_trace(
            "The face shows clear muscle activity around the eyes and the mouth.",
            steps,
            sorted({a for s in steps for a in s.aus}),
            answer,
        )
        if rng.random() < 0.1:
            text = text[: int(rng.integers(10, len(text) - 30))]
        texts.append(text)
        gts.append(GroundTruth(label, act, (w, h), FAMILY, labels=LABELS).to_json())
    return {"texts": texts, "gts": gts}


# ------------------------------------------------------------------ per-sample baseline

_ADAPTER = get_adapter(FAMILY)


def compute_score_one(solution_str: str, ground_truth: str) -> dict[str, float]:
    """One response the per-sample way: parse_trace, convert, torch reference with B=1."""
    gt = json.loads(ground_truth)
    tr = parse_trace(solution_str, labels=gt["labels"])
    fmt = float(tr.format_ok)
    ans = float(
        tr.format_ok and tr.answer is not None and tr.answer == canonical_label(gt["label"])
    )
    grd = 0.0
    if tr.format_ok:
        pairs = tr.pairs()[:64]
        k = max(1, len(pairs))
        pred_au = torch.full((1, k), -1, dtype=torch.int32)
        pred_boxes = torch.zeros((1, k, 4), dtype=torch.float32)
        if pairs:
            pred_au[0, : len(pairs)] = torch.tensor([a for a, _ in pairs], dtype=torch.int32)
            px = _ADAPTER.to_pixels(
                np.array([b for _, b in pairs], dtype=np.float32), gt["image_size"]
            )
            pred_boxes[0, : len(pairs)] = torch.from_numpy(
                np.nan_to_num(np.asarray(px, np.float32))
            )
        act = gt["activated"]
        m = max(1, len(act))
        ref_au = torch.full((1, m), -1, dtype=torch.int32)
        ref_prob = torch.zeros((1, m), dtype=torch.float32)
        ref_boxes = torch.zeros((1, m, 4), dtype=torch.float32)
        for j, e in enumerate(act):
            ref_au[0, j], ref_prob[0, j] = e["au"], e["prob"]
            ref_boxes[0, j] = torch.tensor(e["box"])
        reward = au_grounding_reward_reference(pred_boxes, pred_au, ref_boxes, ref_au, ref_prob)[0]
        grd = float(torch.nan_to_num(reward, nan=0.0)[0])
    return {"score": fmt + ans + grd, "format": fmt, "answer": ans, "grounding": grd}


def per_sample(texts: list[str], gts: list[str]) -> list[dict[str, float]]:
    return [compute_score_one(t, g) for t, g in zip(texts, gts, strict=True)]
