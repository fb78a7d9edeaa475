"""AU-grounding reward throughput: each backend against the pure-Python scorer and the torch
reference, on the same data in the same run.

    uv run pytest bench/bench_au_reward.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tag_kernels.au_reward import au_grounding_reward

from tests.kernels._data import make_batch

from .baselines import score_all, to_python_samples

SIZES = [(512, 16), (512, 32), (4096, 16), (4096, 32)]


@pytest.fixture(scope="module", params=SIZES, ids=[f"B{b}-K{k}" for b, k in SIZES])
def data(request: pytest.FixtureRequest) -> dict:
    B, K = request.param
    batch = make_batch(B + K, B, K, K, n_au=8, pad=0.2)
    return dict(B=B, K=K, batch=batch, want=au_grounding_reward(**batch, backend="torch").reward)


def _group(data: dict) -> str:
    return f"au_reward B={data['B']} K=M={data['K']}"


def _setup(benchmark, data: dict, backend: str, baseline: bool = False) -> None:
    benchmark.group = _group(data)
    benchmark.extra_info["backend"] = backend
    benchmark.extra_info["baseline"] = baseline


def test_python_per_sample(benchmark, data: dict) -> None:
    _setup(benchmark, data, "python", baseline=True)
    preds, refs = to_python_samples(data["batch"])
    out = benchmark.pedantic(score_all, args=(preds, refs), rounds=3, iterations=1)
    np.testing.assert_allclose(out, data["want"], atol=1e-5)


def test_torch_reference(benchmark, data: dict) -> None:
    _setup(benchmark, data, "torch-reference", baseline=True)
    t = {k: torch.from_numpy(v) for k, v in data["batch"].items()}
    out = benchmark(lambda: au_grounding_reward(**t, backend="torch"))
    np.testing.assert_allclose(out.reward.numpy(), data["want"], atol=1e-6)


def test_numba(benchmark, data: dict) -> None:
    _setup(benchmark, data, "numba")
    au_grounding_reward(**data["batch"])  # compile outside the timing
    out = benchmark(lambda: au_grounding_reward(**data["batch"]))
    np.testing.assert_allclose(out.reward, data["want"], atol=2e-6)


def test_jax_cpu(benchmark, data: dict) -> None:
    jnp = pytest.importorskip("jax.numpy")
    _setup(benchmark, data, "jax")
    j = {k: jnp.asarray(v) for k, v in data["batch"].items()}
    au_grounding_reward(**j).reward.block_until_ready()
    out = benchmark(lambda: au_grounding_reward(**j).reward.block_until_ready())
    np.testing.assert_allclose(np.asarray(out), data["want"], atol=2e-6)


@pytest.mark.gpu
def test_triton_cuda(benchmark, data: dict) -> None:
    _setup(benchmark, data, "triton")
    c = {k: torch.from_numpy(v).cuda() for k, v in data["batch"].items()}

    def run() -> torch.Tensor:
        r = au_grounding_reward(**c).reward
        torch.cuda.synchronize()
        return r

    run()
    out = benchmark(run)
    np.testing.assert_allclose(out.cpu().numpy(), data["want"], atol=2e-6)


@pytest.mark.gpu
def test_torch_reference_cuda(benchmark, data: dict) -> None:
    _setup(benchmark, data, "torch-reference-cuda", baseline=True)
    c = {k: torch.from_numpy(v).cuda() for k, v in data["batch"].items()}

    def run() -> torch.Tensor:
        r = au_grounding_reward(**c, backend="torch").reward
        torch.cuda.synchronize()
        return r

    run()
    benchmark(run)
