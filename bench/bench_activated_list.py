"""activated_list throughput at B = 65,536 faces, iBUG-68 table, top-6 over 0.5: Numba and JAX
against the torch reference, and the torch reference against a pure-Python per-face loop, on
the same data in the same run (one benchmark group, so the speed-ups are printed together).

    uv run pytest bench/bench_activated_list.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tag_kernels.activated_list import activated_list
from tag_kernels.regions import IBUG68_REGIONS

from tests.kernels._data import activated_python

B = 65_536
TOP_K, THRESHOLD = 6, 0.5
T = IBUG68_REGIONS
GROUP = f"activated_list B={B} (iBUG-68, A={len(T.aus)}, top-{TOP_K})"


@pytest.fixture(scope="module")
def data() -> dict:
    rng = np.random.default_rng(0)
    # detector-like probabilities: most AUs low, a few high, 1% NaN, some exact ties
    p = rng.beta(0.6, 1.8, (B, len(T.aus))).astype(np.float32)
    p[rng.random(p.shape) < 0.01] = np.nan
    p[: B // 16] = np.round(p[: B // 16] * 4) / 4
    x = rng.uniform(0, 160, (B, len(T), 2)).astype(np.float32)
    boxes = np.concatenate([x, x + rng.uniform(4, 60, (B, len(T), 2)).astype(np.float32)], -1)
    want = activated_list(
        torch.from_numpy(p), torch.from_numpy(boxes), T, top_k=TOP_K, threshold=THRESHOLD,
        backend="torch",
    )  # fmt: skip
    return dict(p=p, boxes=boxes, want=tuple(w.numpy() for w in want))


def _setup(benchmark, backend: str, baseline: bool = False) -> None:
    benchmark.group = GROUP
    benchmark.extra_info["backend"] = backend
    benchmark.extra_info["baseline"] = baseline


def _check(out, want) -> None:
    for o, w in zip(out, want, strict=True):
        np.testing.assert_array_equal(np.asarray(o), w)


def test_python_per_face(benchmark, data: dict) -> None:
    _setup(benchmark, "python", baseline=True)
    out = benchmark.pedantic(
        activated_python, args=(data["p"], data["boxes"], T, TOP_K, THRESHOLD), rounds=1,
        iterations=1,
    )  # fmt: skip
    _check(out, data["want"])


def test_torch_reference(benchmark, data: dict) -> None:
    _setup(benchmark, "torch-reference", baseline=True)
    p, boxes = torch.from_numpy(data["p"]), torch.from_numpy(data["boxes"])
    out = benchmark(
        lambda: activated_list(p, boxes, T, top_k=TOP_K, threshold=THRESHOLD, backend="torch")
    )
    _check([o.numpy() for o in out], data["want"])


def test_numba(benchmark, data: dict) -> None:
    _setup(benchmark, "numba")
    p, boxes = data["p"], data["boxes"]
    activated_list(p[:8], boxes[:8], T, top_k=TOP_K, threshold=THRESHOLD)  # compile first
    out = benchmark(lambda: activated_list(p, boxes, T, top_k=TOP_K, threshold=THRESHOLD))
    _check(out, data["want"])


def test_jax(benchmark, data: dict) -> None:
    jnp = pytest.importorskip("jax.numpy")
    _setup(benchmark, "jax")
    p, boxes = jnp.asarray(data["p"]), jnp.asarray(data["boxes"])

    def run():
        out = activated_list(p, boxes, T, top_k=TOP_K, threshold=THRESHOLD)
        out[0].block_until_ready()
        return out

    run()
    _check(benchmark(run), data["want"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_cuda(benchmark, data: dict) -> None:
    _setup(benchmark, "torch-cuda")
    p, boxes = torch.from_numpy(data["p"]).cuda(), torch.from_numpy(data["boxes"]).cuda()

    def run():
        out = activated_list(p, boxes, T, top_k=TOP_K, threshold=THRESHOLD)
        torch.cuda.synchronize()
        return out

    run()
    _check([o.cpu().numpy() for o in benchmark(run)], data["want"])
