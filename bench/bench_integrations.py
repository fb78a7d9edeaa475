"""verl's batch reward contract, 4,096 responses of ~600 characters: TAG's batched
``compute_score_batch`` against the per-sample way (one ``compute_score`` per response:
TAG's own ``parse_trace`` + the plain-torch reference reward, one sample at a time, as
verl's naive reward manager would call a per-response function).

Both score format + answer + AU grounding from the same ``ground_truth`` JSON strings and
must agree before anything is timed.

The ``slow`` benchmark at the end runs the same comparison inside the real verl 0.9.1, in its
own environment (``tests/_verl_env.py``; made once under ``.tag-cache/verl-0.9.1-venv``): verl's
``BatchRewardManager`` calling TAG's ``compute_score_batch`` against its
``NaiveRewardManager`` calling the per-sample function, on a ``DataProto`` of the same
responses tokenized by the tiny Qwen2.5-VL tokenizer. It also reports the share of the batch
manager's call that TAG's function takes (the rest is verl decoding the token ids).

    .venv/bin/python -m pytest bench/bench_integrations.py --benchmark-only
    .venv/bin/python -m pytest bench/bench_integrations.py --benchmark-only -m slow
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tag_train.integrations._ground_truth import _from_json_cached
from tag_train.integrations.verl import compute_score_batch

from bench._integrations_data import B, make_data, per_sample

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


# ------------------------------------------------------------- inside the real verl (slow)

IN_VERL = r"""
import json, statistics, sys, time
import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer
from verl import DataProto
from verl.trainer.ppo.reward import get_custom_reward_fn
from verl.workers.reward_manager.batch import BatchRewardManager
from verl.workers.reward_manager.naive import NaiveRewardManager

import tag_train.integrations.verl as tag_verl
from tag_train.integrations._ground_truth import _from_json_cached

sys.path.insert(0, sys.argv[2])
from bench._integrations_data import compute_score_one, make_data

tok = AutoTokenizer.from_pretrained(sys.argv[1])
d = make_data()
texts, gts = d["texts"], d["gts"]
resp = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
prompt = tok("<|im_start|>user\nWhich emotion?<|im_end|>\n<|im_start|>assistant\n",
             add_special_tokens=False)["input_ids"]
B, P, R = len(texts), len(prompt), max(map(len, resp))
pad = tok.pad_token_id if tok.pad_token_id is not None else 0
responses = torch.full((B, R), pad, dtype=torch.long)
mask = torch.zeros((B, P + R), dtype=torch.long)
mask[:, :P] = 1
for i, r in enumerate(resp):
    responses[i, :len(r)] = torch.tensor(r)
    mask[i, P:P + len(r)] = 1
prompts = torch.tensor([prompt] * B)
data = DataProto.from_dict(
    tensors={"prompts": prompts, "responses": responses, "attention_mask": mask,
             "input_ids": torch.cat([prompts, responses], 1)},
    non_tensors={
        "data_source": np.array(["tag/fer"] * B, dtype=object),
        "reward_model": np.array([{"style": "rule", "ground_truth": g} for g in gts], dtype=object),
        "extra_info": np.array([{"index": i} for i in range(B)], dtype=object),
    },
)

def cfg(name):
    return OmegaConf.create({"reward": {"custom_reward_function": {
        "path": tag_verl.__file__, "name": name, "reward_kwargs": {}}}})

batch_fn = get_custom_reward_fn(cfg("compute_score_batch"))
inside = []

def timed_batch(**kw):
    t = time.perf_counter()
    out = batch_fn(**kw)
    inside.append(time.perf_counter() - t)
    return out

def one(data_source, solution_str, ground_truth, extra_info=None):
    return compute_score_one(solution_str, ground_truth)

def last(t):
    return [float(t[i, len(r) - 1]) for i, r in enumerate(resp)]

batch_mgr = BatchRewardManager(tok, 0, compute_score=timed_batch)
naive_mgr = NaiveRewardManager(tok, 0, compute_score=one)
batch_times, naive_times = [], []
for _ in range(3):
    _from_json_cached.cache_clear()  # each call parses its 4,096 JSON strings, as the baseline
    t = time.perf_counter()
    got = batch_mgr(data, return_dict=True)["reward_tensor"]
    batch_times.append(time.perf_counter() - t)
for _ in range(2):
    t = time.perf_counter()
    want = naive_mgr(data, return_dict=True)["reward_tensor"]
    naive_times.append(time.perf_counter() - t)
print("RESULT " + json.dumps({
    "batch_s": statistics.median(batch_times), "naive_s": statistics.median(naive_times),
    "tag_share": statistics.median(x / y for x, y in zip(inside, batch_times)),
    "max_abs_diff": float(np.max(np.abs(np.array(last(got)) - np.array(last(want))))),
    "mean_score": float(np.mean(last(got))), "B": B,
    "mean_chars": float(np.mean([len(t) for t in texts])),
}))
"""


@pytest.mark.slow
def test_inside_verls_reward_managers(benchmark, tmp_path: Path) -> None:
    """verl's BatchRewardManager + TAG vs its NaiveRewardManager + the per-sample function.

    The timed round is the whole driver process (imports, data, tokenizing, 3 batch-manager
    calls and 2 naive ones); the numbers that matter are the managers' own medians, measured
    inside verl and stored in ``extra_info`` (shown with ``--benchmark-columns`` or the JSON).
    """
    from tag_model.backbones import make_tiny_vlm

    from tests import _verl_env

    try:
        python = _verl_env.verl_python(_verl_env.REPO / ".tag-cache" / "verl-0.9.1-venv")
    except (FileNotFoundError, RuntimeError) as exc:
        pytest.skip(f"no verl environment: {exc}")
    _, processor = make_tiny_vlm("qwen2_5_vl")
    processor.tokenizer.save_pretrained(tmp_path / "tok")
    out: dict = {}

    def run() -> None:
        out.update(
            _verl_env.run_driver(python, IN_VERL, tmp_path / "tok", _verl_env.REPO, timeout=1800)
        )

    benchmark.group = f"inside verl 0.9.1's reward managers (token ids -> reward tensor), B={B}"
    benchmark.extra_info["backend"] = "driver"
    benchmark.pedantic(run, rounds=1, iterations=1)
    assert out["max_abs_diff"] < 2e-3 and out["mean_score"] > 1.0
    speedup = out["naive_s"] / out["batch_s"]
    benchmark.extra_info.update(out, speedup=speedup)
    print(
        f"\ninside verl: NaiveRewardManager + per-sample {out['naive_s']:.3f} s, "
        f"BatchRewardManager + TAG {out['batch_s']:.3f} s: {speedup:.1f}x; "
        f"TAG's function is {100 * out['tag_share']:.1f} % of the batch manager's call"
    )
    if not benchmark.disabled:  # CI's untimed pass (--benchmark-disable): no speed goal
        assert speedup >= 10, f"goal: >= 10x inside verl's managers, measured {speedup:.1f}x"
