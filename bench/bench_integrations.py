"""verl's batch reward contract, 4,096 responses of ~600 characters: TAG's batched
``compute_score_batch`` against the per-sample way (one ``compute_score`` per response:
TAG's own ``parse_trace`` + the plain-torch reference reward, one sample at a time, as
verl's naive reward manager would call a per-response function).

Both score format + answer + AU grounding from the same ``ground_truth`` JSON strings and
must agree before anything is timed.

    .venv/bin/python -m pytest bench/bench_integrations.py --benchmark-only
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tag_kernels.au_reward._reference import au_grounding_reward_reference
from tag_model.au import canonical_label
from tag_model.backbones import get_adapter
from tag_model.grounding import TraceStep, parse_trace, render_trace
from tag_train.integrations import GroundTruth
from tag_train.integrations._ground_truth import _from_json_cached
from tag_train.integrations.verl import compute_score_batch

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


# --------------------------------------------------------------------------- benchmarks


@pytest.fixture(scope="module")
def data() -> dict:
    d = make_data()
    d["want"] = per_sample(d["texts"], d["gts"])
    got = compute_score_batch(None, d["texts"], d["gts"])
    for k in ("format", "answer", "grounding", "score"):
        np.testing.assert_allclose([o[k] for o in got], [o[k] for o in d["want"]], atol=2e-3)
    assert np.mean([len(t) for t in d["texts"]]) > 450
    assert sum(o["grounding"] > 0 for o in got) > B // 2
    return d


def _setup(benchmark, backend: str, baseline: bool = False) -> None:
    benchmark.group = f"verl reward contract (text + ground_truth JSON -> score dicts), B={B}"
    benchmark.extra_info["backend"] = backend
    benchmark.extra_info["baseline"] = baseline


def test_per_sample_compute_score(benchmark, data: dict) -> None:
    _setup(benchmark, "per-sample", baseline=True)
    out = benchmark.pedantic(per_sample, args=(data["texts"], data["gts"]), rounds=3, iterations=1)
    assert out == data["want"]


def test_compute_score_batch(benchmark, data: dict) -> None:
    _setup(benchmark, "tag-batch")

    def run() -> list[dict[str, float]]:
        _from_json_cached.cache_clear()  # every round parses its 4,096 JSON strings, as the baseline
        return compute_score_batch(None, data["texts"], data["gts"])

    out = benchmark(run)
    np.testing.assert_allclose(
        [o["score"] for o in out], [o["score"] for o in data["want"]], atol=2e-3
    )


def test_compute_score_batch_cached_ground_truths(benchmark, data: dict) -> None:
    """GRPO scores n rollouts per prompt: the same ground-truth string repeats, parsed once."""
    _setup(benchmark, "tag-batch-gt-cached")
    compute_score_batch(None, data["texts"], data["gts"])
    out = benchmark(lambda: compute_score_batch(None, data["texts"], data["gts"]))
    np.testing.assert_allclose(
        [o["score"] for o in out], [o["score"] for o in data["want"]], atol=2e-3
    )
