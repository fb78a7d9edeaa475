"""End-to-end AU-grounding reward, text in -> floats out, on 512 completions.

``tag_train.rewards.get_grounding_reward`` (compiled ``parse_batch`` -> vectorised adapter
conversion -> one batched ``au_grounding_reward`` call) against a pure-Python per-sample
scorer (regex parse + coordinate conversion + IoU + greedy matching per completion, the way
VLM-R1 / Perception-R1 score grounding rewards today), same data, same run.

    .venv/bin/python -m pytest bench/bench_reward_e2e.py --benchmark-only
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from tag_model.grounding import TraceStep, render_trace
from tag_train.rewards import get_grounding_reward

from .baselines import score_one

B = 512
LABELS = ("happiness", "sadness", "surprise", "anger", "fear", "disgust", "neutral")
_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 17, 20, 23, 25, 26)


def make_data(n: int = B, seed: int = 0) -> dict:
    """Realistic traces (~6 boxes, ~600 characters), 10 % truncated, and their activated lists."""
    rng = np.random.default_rng(seed)
    texts, acts, sizes = [], [], []
    for i in range(n):
        w, h = int(rng.integers(100, 640)), int(rng.integers(100, 640))
        entries, steps = [], []
        for au in rng.choice(_AUS, size=6, replace=False):
            x1, y1 = rng.uniform(0, 0.7 * w), rng.uniform(0, 0.7 * h)
            box = [x1, y1, x1 + rng.uniform(8, 0.3 * w), y1 + rng.uniform(8, 0.3 * h)]
            entries.append({"au": int(au), "prob": float(rng.uniform(0.5, 1.0)), "box": box})
            if rng.random() < 0.85:  # the model grounds most of them, a little off
                m = np.round((np.array(box) + rng.normal(0, 5, 4)) / [w, h, w, h] * 1000)
                m = np.clip(m, 0, 1000)
                if m[0] < m[2] and m[1] < m[3]:
                    steps.append(
                        TraceStep(
                            "the region", "a visible change there", (int(au),), tuple(m.tolist())
                        )
                    )
        if not steps:
            steps.append(TraceStep("the face", "calm", (), (10, 10, 990, 990)))
        text = render_trace(
            "The face shows clear muscle activity around the eyes and the mouth.",
            steps,
            sorted({a for s in steps for a in s.aus}),
            LABELS[i % len(LABELS)],
        )
        if rng.random() < 0.1:
            text = text[: int(rng.integers(10, len(text) - 30))]
        texts.append(text)
        acts.append(entries)
        sizes.append((w, h))
    return {"texts": texts, "activated": acts, "sizes": sizes}


# --------------------------------------------------------------------- pure-Python baseline

_STEP = re.compile(r"((?:AU\s*\d+\s*)*)<bbox>\s*\[([^\]]*)\]\s*</bbox>")
_AU = re.compile(r"AU\s*(\d+)")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


def python_reward(text: str, activated: list[dict], size: tuple[int, int]) -> float:
    """One completion, the per-sample way: regex, convert, score_one (IoU + greedy matching)."""
    answers = _ANSWER.findall(text)
    if (
        "Global analysis:" not in text
        or "Verification loop:" not in text
        or "Final conclusion:" not in text
        or len(answers) != 1
    ):
        return 0.0
    w, h = size
    pred = []
    for au_txt, coords in _STEP.findall(text):
        try:
            x1, y1, x2, y2 = (float(v) for v in coords.split(","))
        except ValueError:
            return 0.0
        if not (x1 < x2 and y1 < y2):
            return 0.0
        box = [x1 * w / 1000, y1 * h / 1000, x2 * w / 1000, y2 * h / 1000]
        aus = [int(a) for a in _AU.findall(au_txt)] or [0]
        pred.extend((a, box) for a in aus)
    if not pred:
        return 0.0
    ref = [(int(e["au"]), float(e["prob"]), e["box"]) for e in activated]
    return score_one(pred, ref)


def python_rewards(texts, activated, sizes) -> list[float]:
    return [python_reward(t, a, s) for t, a, s in zip(texts, activated, sizes)]


# --------------------------------------------------------------------- benchmarks


@pytest.fixture(scope="module")
def data() -> dict:
    d = make_data()
    d["reward"] = get_grounding_reward("qwen2_vl", labels=LABELS)
    d["want"] = python_rewards(d["texts"], d["activated"], d["sizes"])
    return d


def _setup(benchmark, backend: str, baseline: bool = False) -> None:
    benchmark.group = f"grounding reward end-to-end (text -> floats), B={B}"
    benchmark.extra_info["backend"] = backend
    benchmark.extra_info["baseline"] = baseline


def test_python_per_sample(benchmark, data: dict) -> None:
    _setup(benchmark, "python-regex", baseline=True)
    out = benchmark.pedantic(
        python_rewards,
        args=(data["texts"], data["activated"], data["sizes"]),
        rounds=10,
        iterations=1,
    )
    assert out == data["want"]


def test_tag_train_reward(benchmark, data: dict) -> None:
    _setup(benchmark, "tag-train")
    f = data["reward"]
    kw = {"activated": data["activated"], "image_size": data["sizes"]}
    f(data["texts"], **kw)  # compile outside the timing
    out = benchmark(lambda: f(data["texts"], **kw))
    np.testing.assert_allclose(out, data["want"], atol=2e-3)
    assert sum(v > 0 for v in out) > B // 2
