"""Batched box IoU throughput: Numba and JAX against the torch reference, same data, same run.

uv run pytest bench/bench_box_iou.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tag_kernels import batched_box_iou

from tests.kernels._data import random_boxes

B, K, M = 4096, 32, 32


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, (B, K)), random_boxes(rng, (B, M))
    return a, b, batched_box_iou(a, b, backend="torch")


def _setup(benchmark, name: str, baseline: bool = False) -> None:
    benchmark.group = f"box_iou B={B} K=M={K}"
    benchmark.extra_info.update(backend=name, baseline=baseline)


def test_torch_reference(benchmark, data) -> None:
    _setup(benchmark, "torch-reference", baseline=True)
    a, b = torch.from_numpy(data[0]), torch.from_numpy(data[1])
    benchmark(lambda: batched_box_iou(a, b, backend="torch"))


def test_numba(benchmark, data) -> None:
    _setup(benchmark, "numba")
    batched_box_iou(data[0], data[1])
    out = benchmark(lambda: batched_box_iou(data[0], data[1]))
    np.testing.assert_allclose(out, data[2], rtol=1e-6, atol=1e-7)


def test_jax_cpu(benchmark, data) -> None:
    jnp = pytest.importorskip("jax.numpy")
    _setup(benchmark, "jax")
    a, b = jnp.asarray(data[0]), jnp.asarray(data[1])
    batched_box_iou(a, b).block_until_ready()
    out = benchmark(lambda: batched_box_iou(a, b).block_until_ready())
    np.testing.assert_allclose(np.asarray(out), data[2], rtol=1e-6, atol=1e-7)
