"""batched_box_iou and elementwise_box_iou: every backend against the plain-torch reference, plus hand-written cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tag_kernels import batched_box_iou, elementwise_box_iou
from tag_kernels.box_iou._reference import box_iou_reference

from ._data import adversarial, random_boxes


def _ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return box_iou_reference(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def test_hand_table() -> None:
    a = np.array([[[0, 0, 2, 2], [0, 0, 1, 1], [5, 5, 5, 9], [np.nan, 0, 1, 1]]], np.float32)
    b = np.array([[[1, 0, 3, 2], [0, 0, 2, 2], [2, 2, 0, 0]]], np.float32)
    want = np.array(
        [
            [[1 / 3, 1.0, 0.0], [0.0, 0.25, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        ],
        np.float32,
    )
    for be in ("torch", "numba", "jax", "triton"):
        np.testing.assert_allclose(batched_box_iou(a, b, backend=be), want, rtol=1e-6, err_msg=be)


@pytest.mark.parametrize(
    "B,K,M", [(1, 1, 1), (3, 7, 5), (2, 0, 4), (2, 4, 0), (0, 3, 3), (5, 33, 17)]
)
def test_backends_match_reference(backend: str, B: int, K: int, M: int) -> None:
    rng = np.random.default_rng(B * 100 + K * 10 + M)
    a = adversarial(rng, random_boxes(rng, (B, K)), 0.3)
    b = adversarial(rng, random_boxes(rng, (B, M)), 0.3)
    got = np.asarray(batched_box_iou(a, b, backend=backend))
    want = _ref(a, b)
    assert got.shape == (B, K, M) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert np.isfinite(got).all() and (got >= 0).all() and (got <= 1).all()


def test_degenerate_boxes_score_zero() -> None:
    good = np.array([0, 0, 10, 10], np.float32)
    bad = [
        [0, 0, 0, 10],
        [10, 10, 0, 0],
        [np.nan, 0, 10, 10],
        [0, 0, np.inf, 10],
        [3e38, 3e38, 3.4e38, 3.4e38],
    ]
    a = np.array([[good]] * len(bad), np.float32)
    b = np.array([[x] for x in bad], np.float32)
    for be in ("torch", "numba", "jax", "triton"):
        assert np.asarray(batched_box_iou(a, b, backend=be)).max() == 0.0, be
        assert np.asarray(batched_box_iou(b, a, backend=be)).max() == 0.0, be


def test_large_coordinates() -> None:
    a = np.array([[[1e6, 1e6, 1e6 + 100, 1e6 + 100]]], np.float32)
    b = np.array([[[1e6 + 50, 1e6, 1e6 + 150, 1e6 + 100]]], np.float32)
    for be in ("torch", "numba", "jax", "triton"):
        np.testing.assert_allclose(batched_box_iou(a, b, backend=be), [[[1 / 3]]], rtol=1e-5)


def test_dispatch_follows_input_family() -> None:
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, (2, 3)), random_boxes(rng, (2, 4))
    t = batched_box_iou(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(t, torch.Tensor) and t.shape == (2, 3, 4)
    jnp = pytest.importorskip("jax.numpy")
    j = batched_box_iou(jnp.asarray(a), jnp.asarray(b))
    assert type(j).__module__.startswith("jax")
    np.testing.assert_allclose(np.asarray(j), t.numpy(), rtol=1e-6)
    h = batched_box_iou(torch.from_numpy(a).bfloat16(), torch.from_numpy(b).bfloat16())
    assert h.dtype == torch.float32


@pytest.mark.parametrize(
    "a_shape,b_shape,match",
    [
        ((2, 3, 4), (3, 3, 4), "batch size"),
        ((2, 3), (2, 3, 4), "a must be 3-d"),
        ((2, 3, 5), (2, 3, 4), "last dim 4"),
    ],
)
def test_bad_shapes_raise(a_shape: tuple[int, ...], b_shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        batched_box_iou(np.zeros(a_shape, np.float32), np.zeros(b_shape, np.float32))


def test_bad_dtype_and_mixed_family_raise() -> None:
    with pytest.raises(ValueError, match="floating"):
        batched_box_iou(np.zeros((1, 1, 4), np.int32), np.zeros((1, 1, 4), np.float32))
    with pytest.raises(ValueError, match="one array family"):
        batched_box_iou(np.zeros((1, 1, 4), np.float32), torch.zeros(1, 1, 4))
    with pytest.raises(ValueError, match="backend must be one of"):
        batched_box_iou(
            np.zeros((1, 1, 4), np.float32), np.zeros((1, 1, 4), np.float32), backend="cuda"
        )


@pytest.mark.gpu
def test_cuda_matches_reference() -> None:
    rng = np.random.default_rng(1)
    a = adversarial(rng, random_boxes(rng, (64, 37)), 0.2)
    b = adversarial(rng, random_boxes(rng, (64, 19)), 0.2)
    got = batched_box_iou(torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda())
    assert got.is_cuda
    np.testing.assert_allclose(got.cpu().numpy(), _ref(a, b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 0), (0,)])
def test_elementwise_is_the_diagonal_of_pairwise(backend: str, shape: tuple[int, ...]) -> None:
    """Box i against box i, by the pairwise rule (degenerate or non-finite boxes score 0)."""
    rng = np.random.default_rng(sum(shape) + 1)
    n = int(np.prod(shape))
    a = adversarial(rng, random_boxes(rng, (1, n)), 0.3)[0]
    b = adversarial(rng, random_boxes(rng, (1, n)), 0.3)[0]
    b[: n // 3] = a[: n // 3]  # some identical pairs: IoU 1 where valid
    got = np.asarray(
        elementwise_box_iou(a.reshape(*shape, 4), b.reshape(*shape, 4), backend=backend)
    )
    assert got.shape == shape and got.dtype == np.float32
    want = np.diagonal(_ref(a[None], b[None])[0]) if n else np.zeros(0, np.float32)
    np.testing.assert_allclose(got.reshape(-1), want, rtol=1e-6, atol=1e-7)
    assert got.reshape(-1)[: n // 3].max(initial=0.0) <= 1.0


def test_elementwise_families_and_shape_errors() -> None:
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1], [3, 3, 1, 1]], np.float32)
    b = np.array([[1, 0, 3, 2], [0, 0, 1, 1], [3, 3, 1, 1]], np.float32)
    want = [1 / 3, 1.0, 0.0]
    np.testing.assert_allclose(elementwise_box_iou(a, b), want, rtol=1e-6)
    t = elementwise_box_iou(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        elementwise_box_iou(a, b[:2])
    with pytest.raises(ValueError, match="one shape"):
        elementwise_box_iou(a[:, :3], b[:, :3])
