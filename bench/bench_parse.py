"""Trace parsing throughput: compiled ``parse_batch`` against ``parse_trace`` in a Python loop.

B = 512 completions of about 600 characters with 6 boxes each, same data, same run, same group.

    .venv/bin/python -m pytest bench/bench_parse.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tag_model.grounding import TraceStep, parse_batch, parse_trace, render_trace

B = 512
_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 17, 20, 23, 25, 26)
_REGIONS = ("inner brows", "outer brows", "upper eyelids", "cheeks", "nose", "lip corners", "chin")
LABELS = ("happiness", "sadness", "surprise", "anger", "fear", "disgust", "neutral")


def make_texts(n: int = B, seed: int = 0) -> list[str]:
    """Traces with 6 boxed steps, ~600 characters each."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        steps = []
        for au in rng.choice(_AUS, size=6, replace=False):
            x1, y1 = rng.integers(0, 700, 2)
            box = (
                int(x1),
                int(y1),
                int(x1 + rng.integers(20, 300)),
                int(y1 + rng.integers(20, 300)),
            )
            steps.append(
                TraceStep(str(rng.choice(_REGIONS)), "visible contraction", (int(au),), box)
            )
        out.append(render_trace(
            "The face shows muscle activity around the eyes and the mouth.",
            steps, [int(s.aus[0]) for s in steps[:2]], LABELS[i % len(LABELS)],
        ))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def texts() -> list[str]:
    t = make_texts()
    mean = sum(map(len, t)) / len(t)
    assert 500 <= mean <= 700, mean
    return t


def _setup(benchmark, name: str, baseline: bool = False) -> None:
    benchmark.group = f"parse B={B} ~600 chars 6 boxes"
    benchmark.extra_info.update(backend=name, baseline=baseline)


def test_parse_trace_loop(benchmark, texts) -> None:
    _setup(benchmark, "parse_trace-loop", baseline=True)
    out = benchmark(lambda: [parse_trace(t) for t in texts])
    assert all(p.format_ok and len(p.pairs()) == 6 for p in out)


def test_parse_batch_numba(benchmark, texts) -> None:
    _setup(benchmark, "parse_batch-numba")
    parse_batch(texts)  # compile / load the cache
    pb = benchmark(lambda: parse_batch(texts))
    assert pb.format_ok.all() and (pb.n_pairs == 6).all()
    ref = [parse_trace(t) for t in texts]
    assert pb.answer_id.tolist() == [p.answer_id for p in ref]
    assert pb.pred_au[:, :6].tolist() == [[a for a, _ in p.pairs()] for p in ref]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_parse_batch_triton_cuda(benchmark, texts) -> None:
    from tag_model.grounding._batch import _pack_strings
    from tag_model.grounding._codes import label_table
    from tag_model.grounding._triton import scan_packed_triton

    _setup(benchmark, "parse_batch-triton")
    buf, off, _ = _pack_strings(texts)
    tbuf, toff = torch.from_numpy(buf.copy()).cuda(), torch.from_numpy(off).cuda()
    tab = label_table(None)

    def run():
        out, _ = scan_packed_triton(tbuf, toff, tab, 64)
        torch.cuda.synchronize()
        return out

    run()
    out = benchmark(run)
    assert (out["reason_mask"] == 0).all() and (out["n_pairs"] == 6).all()
