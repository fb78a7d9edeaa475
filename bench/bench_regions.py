"""landmarks_to_regions throughput at B = 65,536 faces, iBUG-68 table: Numba and JAX against
the torch reference, and the torch reference against a pure-Python per-face loop, on the same
data in the same run (one benchmark group, so the speed-ups are printed together).

    .venv/bin/python -m pytest bench/bench_regions.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tag_kernels.regions import IBUG68_REGIONS, landmarks_to_regions

from tests.kernels._data import regions_python

B = 65_536
GROUP = f"landmarks_to_regions B={B} (iBUG-68, R={len(IBUG68_REGIONS)})"


@pytest.fixture(scope="module")
def data() -> dict:
    rng = np.random.default_rng(0)
    # a jittered mean face in a 224 px image, scaled/translated per face, 1% NaN faces
    mean = rng.uniform(40, 180, (68, 2))
    scale = rng.uniform(0.7, 1.2, (B, 1, 1))
    lm = mean[None] * scale + rng.normal(0, 2, (B, 68, 2)) + rng.uniform(-10, 10, (B, 1, 2))
    lm = lm.astype(np.float32)
    lm[rng.random(B) < 0.01, rng.integers(0, 68)] = np.nan
    size = np.full((B, 2), 224, np.float32)
    want = landmarks_to_regions(torch.from_numpy(lm), torch.from_numpy(size), backend="torch")
    return dict(lm=lm, size=size, want=want.numpy())


def _setup(benchmark, backend: str, baseline: bool = False) -> None:
    benchmark.group = GROUP
    benchmark.extra_info["backend"] = backend
    benchmark.extra_info["baseline"] = baseline


def test_python_per_face(benchmark, data: dict) -> None:
    _setup(benchmark, "python", baseline=True)
    out = benchmark.pedantic(
        regions_python, args=(data["lm"], data["size"], IBUG68_REGIONS), rounds=1, iterations=1
    )
    np.testing.assert_allclose(np.asarray(out, np.float32), data["want"], atol=2e-3, rtol=1e-5)


def test_torch_reference(benchmark, data: dict) -> None:
    _setup(benchmark, "torch-reference", baseline=True)
    lm, size = torch.from_numpy(data["lm"]), torch.from_numpy(data["size"])
    out = benchmark(lambda: landmarks_to_regions(lm, size, backend="torch"))
    np.testing.assert_array_equal(out.numpy(), data["want"])


def test_numba(benchmark, data: dict) -> None:
    _setup(benchmark, "numba")
    landmarks_to_regions(data["lm"][:8], data["size"][:8])  # compile outside the timing
    out = benchmark(lambda: landmarks_to_regions(data["lm"], data["size"]))
    np.testing.assert_allclose(out, data["want"], atol=1e-3, rtol=1e-5)


def test_numba_torch_cpu(benchmark, data: dict) -> None:
    _setup(benchmark, "numba (torch in/out)")
    lm, size = torch.from_numpy(data["lm"]), torch.from_numpy(data["size"])
    landmarks_to_regions(lm[:8], size[:8])
    out = benchmark(lambda: landmarks_to_regions(lm, size))
    np.testing.assert_allclose(out.numpy(), data["want"], atol=1e-3, rtol=1e-5)


def test_jax(benchmark, data: dict) -> None:
    jnp = pytest.importorskip("jax.numpy")
    _setup(benchmark, "jax")
    lm, size = jnp.asarray(data["lm"]), jnp.asarray(data["size"])
    landmarks_to_regions(lm, size).block_until_ready()
    out = benchmark(lambda: landmarks_to_regions(lm, size).block_until_ready())
    np.testing.assert_allclose(np.asarray(out), data["want"], atol=1e-3, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_cuda(benchmark, data: dict) -> None:
    _setup(benchmark, "triton")
    lm, size = torch.from_numpy(data["lm"]).cuda(), torch.from_numpy(data["size"]).cuda()

    def run() -> torch.Tensor:
        r = landmarks_to_regions(lm, size)
        torch.cuda.synchronize()
        return r

    run()
    out = benchmark(run)
    np.testing.assert_allclose(out.cpu().numpy(), data["want"], atol=1e-3, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_reference_cuda(benchmark, data: dict) -> None:
    _setup(benchmark, "torch-reference-cuda", baseline=True)
    lm, size = torch.from_numpy(data["lm"]).cuda(), torch.from_numpy(data["size"]).cuda()

    def run() -> torch.Tensor:
        r = landmarks_to_regions(lm, size, backend="torch")
        torch.cuda.synchronize()
        return r

    run()
    benchmark(run)
