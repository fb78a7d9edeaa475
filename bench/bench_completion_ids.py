"""TRL's ``completion_ids`` (Python lists) -> padded ``[B, T]`` tensor -> device, and the whole
reward step on each path.

GRPO hands the reward functions ``completion_ids`` as a list of B Python lists. The GPU reward
path (``tag_train.rewards``, ``reward_device="cuda"``) first pads them into one tensor and
copies it to the GPU; this file measures that step on its own (B = 512 completions of 150-400
tokens, the length of a 6-box trace), in three ways:

* ``per-row``: ``torch.full`` then one ``torch.as_tensor`` per row (the first version);
* ``pad_sequence``: one tensor per row, then ``torch.nn.utils.rnn.pad_sequence`` (TRL's way);
* ``numpy-scatter``: one flat ``np.fromiter`` and one masked scatter (``rewards._pad_ids``).

On a CUDA machine (tests marked ``gpu``) it also times the host-to-device copy, and the three
TAG rewards per step on each path (text + Numba vs token ids + Triton): the comparison that
``tag-train rl --reward_device auto`` makes on a dummy batch before training.

    .venv/bin/python -m pytest bench/bench_completion_ids.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tag_train.rewards import _pad_ids

B = 512
VOCAB = 151_643  # Qwen2.5's


class _Tok:
    pad_token_id = 151_643


def make_ids(n: int = B, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, VOCAB, int(rng.integers(150, 400))).tolist() for _ in range(n)]


def pad_per_row(ids: list[list[int]], pad: int) -> torch.Tensor:
    t = max(len(c) for c in ids)
    out = torch.full((len(ids), t), pad, dtype=torch.int64)
    for i, c in enumerate(ids):
        out[i, : len(c)] = torch.as_tensor(c, dtype=torch.int64)
    return out


def pad_sequence(ids: list[list[int]], pad: int) -> torch.Tensor:
    rows = [torch.tensor(c, dtype=torch.int64) for c in ids]
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad)


@pytest.fixture(scope="module")
def ids() -> list[list[int]]:
    return make_ids()


def _setup(benchmark, group: str, backend: str, baseline: bool = False) -> None:
    benchmark.group = group
    benchmark.extra_info["backend"] = backend
    benchmark.extra_info["baseline"] = baseline


_PAD = f"completion_ids -> padded int64 [B, T] on the CPU, B={B}"


def test_pad_per_row(benchmark, ids) -> None:
    _setup(benchmark, _PAD, "per-row", baseline=True)
    out = benchmark(pad_per_row, ids, _Tok.pad_token_id)
    assert out.shape[0] == B


def test_pad_sequence(benchmark, ids) -> None:
    _setup(benchmark, _PAD, "pad_sequence")
    out = benchmark(pad_sequence, ids, _Tok.pad_token_id)
    assert torch.equal(out, pad_per_row(ids, _Tok.pad_token_id))


def test_pad_numpy_scatter(benchmark, ids) -> None:
    _setup(benchmark, _PAD, "numpy-scatter")
    out, lengths = benchmark(_pad_ids, ids, _Tok(), "cpu")
    assert torch.equal(out, pad_per_row(ids, _Tok.pad_token_id))
    assert lengths.tolist() == [len(c) for c in ids]


_H2D = f"completion_ids -> padded int64 [B, T] on the GPU, B={B}"


@pytest.mark.gpu
def test_to_cuda_per_row(benchmark, ids) -> None:
    _setup(benchmark, _H2D, "per-row+copy", baseline=True)

    def run():
        out = pad_per_row(ids, _Tok.pad_token_id).cuda()
        torch.cuda.synchronize()
        return out

    run()
    benchmark(run)


@pytest.mark.gpu
def test_to_cuda_numpy_pinned(benchmark, ids) -> None:
    _setup(benchmark, _H2D, "numpy+pinned")

    def run():
        out, _ = _pad_ids(ids, _Tok(), "cuda")
        torch.cuda.synchronize()
        return out

    run()
    out = benchmark(run)
    assert torch.equal(out.cpu(), pad_per_row(ids, _Tok.pad_token_id))


# --------------------------------------------------------------- the three rewards, per step


@pytest.fixture(scope="module")
def reward_batch():
    """B real traces: text (chat messages) and their token ids with a tiny tokenizer."""
    from tag_model.backbones import make_tiny_vlm

    from .bench_reward_e2e import LABELS, make_data

    _model, processor = make_tiny_vlm("qwen2_vl", text_layers=1, vision_depth=1)
    d = make_data()
    tok = processor.tokenizer
    texts = d["texts"]
    return processor, {
        "completions": [[{"role": "assistant", "content": t}] for t in texts],
        "completion_ids": [tok(t, add_special_tokens=False)["input_ids"] for t in texts],
        "activated": d["activated"],
        "image_size": d["sizes"],
        "label": [LABELS[i % len(LABELS)] for i in range(len(texts))],
    }


_STEP = f"format + answer + grounding rewards per GRPO step, B={B}"


def _rewards_step(benchmark, reward_batch, device: str, baseline: bool) -> list:
    from tag_train.rewards import get_tag_rewards
    from tag_train.rl import call_rewards

    from .bench_reward_e2e import LABELS

    processor, batch = reward_batch
    _setup(benchmark, _STEP, f"{device}-path", baseline=baseline)
    fns = get_tag_rewards("qwen2_vl", labels=LABELS, processor=processor, reward_device=device)

    def run():
        out = call_rewards(fns, batch)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    run()  # compile
    return benchmark(run)


@pytest.mark.gpu
def test_rewards_text_path(benchmark, reward_batch) -> None:
    _rewards_step(benchmark, reward_batch, "cpu", baseline=True)


@pytest.mark.gpu
def test_rewards_token_path(benchmark, reward_batch) -> None:
    from tag_train.rewards import get_tag_rewards
    from tag_train.rl import call_rewards

    from .bench_reward_e2e import LABELS

    got = _rewards_step(benchmark, reward_batch, "cuda", baseline=False)
    processor, batch = reward_batch
    text = get_tag_rewards("qwen2_vl", labels=LABELS, processor=processor, reward_device="cpu")
    want = call_rewards(text, batch)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(
            np.array(g, dtype=float), np.array(w, dtype=float), atol=1e-5, equal_nan=True
        )
