"""activated_list: hand-written cases, every backend against the torch reference and against a
plain-Python per-row reading of the semantics, families, dtypes and validation."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tag_kernels.activated_list import activated_list
from tag_kernels.activated_list._reference import activated_list_torch
from tag_kernels.regions import IBUG68_REGIONS, Region, RegionTable, landmarks_to_regions

from ._data import activated_python

T = IBUG68_REGIONS
A, R = len(T.aus), len(T)
BACKENDS = ("torch", "numba", "jax", "triton")


def _run(backend: str, p: np.ndarray, boxes: np.ndarray, table=T, **kw):
    if backend == "jax":
        out = activated_list(jnp.asarray(p), jnp.asarray(boxes), table, **kw)
        return tuple(np.asarray(o) for o in out)
    if backend in ("torch", "triton"):
        out = activated_list(
            torch.from_numpy(p), torch.from_numpy(boxes), table, backend=backend, **kw
        )
        return tuple(o.numpy() for o in out)
    return activated_list(p, boxes, table, backend=backend, **kw)


def _random(rng: np.random.Generator, B: int, quantise: bool = True):
    p = rng.random((B, A)).astype(np.float32)
    if quantise:  # many exact ties
        p = (np.round(p * 5) / 5).astype(np.float32)
    p[rng.random((B, A)) < 0.05] = np.nan
    if B > 3:
        p[0, :] = 0.6  # all tied
        p[1, 2] = np.inf
        p[2, :] = np.nan
        p[3, 5] = -np.inf
    boxes = rng.uniform(0, 100, (B, R, 4)).astype(np.float32)
    return p, boxes


def test_hand_written() -> None:
    p = np.zeros((3, A), np.float32)
    col = {a: j for j, a in enumerate(T.aus)}
    p[0, col[12]], p[0, col[6]], p[0, col[4]], p[0, col[9]] = 0.9, 0.7, 0.5, 0.49
    p[1, col[26]], p[1, col[25]], p[1, col[1]] = 0.8, 0.8, 0.8  # ties -> smaller AU first
    p[1, col[43]] = np.nan
    p[2, :] = np.nan  # nothing activated
    boxes = np.arange(3 * R * 4, dtype=np.float32).reshape(3, R, 4)
    for be in BACKENDS:
        au, pr, bx = _run(be, p, boxes, top_k=4, threshold=0.5)
        assert au.dtype == np.int32 and pr.dtype == np.float32 and bx.dtype == np.float32
        assert au.tolist() == [[12, 6, 4, -1], [1, 25, 26, -1], [-1, -1, -1, -1]], be
        np.testing.assert_allclose(pr, [[0.9, 0.7, 0.5, 0], [0.8, 0.8, 0.8, 0], [0, 0, 0, 0]])
        np.testing.assert_array_equal(bx[0, 0], boxes[0, T.region_of(12)])
        np.testing.assert_array_equal(bx[0, 2], boxes[0, T.region_of(4)])
        np.testing.assert_array_equal(bx[1, 1], bx[1, 2])  # AU25 and AU26 share one region
        np.testing.assert_array_equal(bx[0, 3], 0)
        np.testing.assert_array_equal(bx[2], 0)
        # top_k smaller than the activated count keeps the best
        au2, _, _ = _run(be, p, boxes, top_k=2, threshold=0.5)
        assert au2.tolist() == [[12, 6], [1, 25], [-1, -1]]


def test_threshold_is_inclusive_in_float32() -> None:
    p = np.zeros((1, A), np.float32)
    p[0, 0] = 0.5
    p[0, 1] = np.float32(0.3)  # 0.3 is not exact in float32; compared to float32(0.3) it passes
    p[0, 2] = np.nextafter(np.float32(0.3), np.float32(0))
    boxes = np.ones((1, R, 4), np.float32)
    for be in BACKENDS:
        assert _run(be, p, boxes, top_k=3, threshold=0.5)[0].tolist() == [[1, -1, -1]], be
        assert _run(be, p, boxes, top_k=3, threshold=0.3)[0].tolist() == [[1, 2, -1]], be
        # threshold -inf keeps everything that is not NaN (all A columns, ties by column)
        au = _run(be, p, boxes, top_k=A + 3, threshold=-math.inf)[0]
        assert au[0, :3].tolist() == [1, 2, 4] and (au[0, A:] == -1).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("B", "top_k", "thr"), [(0, 3, 0.5), (1, 0, 0.5), (17, 5, 0.4),
                                                  (64, 25, 0.0), (33, 1, 0.8)])  # fmt: skip
def test_backend_matches_reference_and_python(backend: str, B: int, top_k: int, thr: float) -> None:
    rng = np.random.default_rng(B * 31 + top_k)
    p, boxes = _random(rng, B)
    want = activated_python(p, boxes, T, top_k, thr)
    ref = _run("torch", p, boxes, top_k=top_k, threshold=thr)
    got = _run(backend, p, boxes, top_k=top_k, threshold=thr)
    for w, r, g in zip(want, ref, got):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(r, w)  # the reference equals the plain-Python reading
        np.testing.assert_array_equal(g, r)  # the backend equals the reference exactly


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([0.0, 0.25, 0.5, 1.0, float("nan"), float("inf"), -float("inf")]),
            st.floats(-2, 2, width=32),
        ),
        min_size=2 * A,
        max_size=2 * A,
    ),
    st.integers(0, A + 2),
    st.sampled_from([0.0, 0.5, -1.0, 0.25]),
)
def test_property_numba_equals_python(vals: list[float], top_k: int, thr: float) -> None:
    p = np.asarray(vals, np.float32).reshape(2, A)
    boxes = np.random.default_rng(0).uniform(0, 9, (2, R, 4)).astype(np.float32)
    got = activated_list(p, boxes, T, top_k=top_k, threshold=thr)
    want = activated_python(p, boxes, T, top_k, thr)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    # sorted by descending probability; padding only at the end
    au, pr, _ = got
    for b in range(2):
        n = int((au[b] >= 0).sum())
        assert (au[b, n:] == -1).all() and (pr[b, n:] == 0).all()
        assert all(pr[b, i] >= pr[b, i + 1] for i in range(n - 1))
    # rows are independent
    one = activated_list(p[1:], boxes[1:], T, top_k=top_k, threshold=thr)
    for g, o in zip(got, one):
        np.testing.assert_array_equal(g[1:], o)


def test_families_devices_and_dtypes() -> None:
    rng = np.random.default_rng(2)
    p, boxes = _random(rng, 9, quantise=False)
    ref = _run("torch", p, boxes, top_k=4, threshold=0.3)
    out_t = activated_list(
        torch.from_numpy(p).to(torch.bfloat16).float(),
        torch.from_numpy(boxes),
        T,
        top_k=4,
        threshold=0.3,
    )
    assert all(isinstance(o, torch.Tensor) and o.device.type == "cpu" for o in out_t)
    assert out_t[0].dtype == torch.int32 and out_t[1].dtype == torch.float32
    out_bf = activated_list(
        torch.from_numpy(p).to(torch.bfloat16), torch.from_numpy(boxes).double(), T, top_k=4,
        threshold=0.3,
    )  # fmt: skip
    np.testing.assert_array_equal(out_bf[0].numpy(), out_t[0].numpy())
    out_j = activated_list(jnp.asarray(p), jnp.asarray(boxes), T, top_k=4, threshold=0.3)
    assert all(not isinstance(o, np.ndarray) for o in out_j)
    assert out_j[0].dtype == jnp.int32 and out_j[2].dtype == jnp.float32
    out_n = activated_list(
        p.astype(np.float64), boxes.astype(np.float64), T, top_k=4, threshold=0.3
    )
    assert all(isinstance(o, np.ndarray) for o in out_n)
    for a, b in zip(ref, out_n):
        np.testing.assert_array_equal(a, b)
    # backend override keeps the family
    assert isinstance(
        activated_list(p, boxes, T, top_k=2, threshold=0.5, backend="jax")[0], np.ndarray
    )
    assert isinstance(
        activated_list(torch.from_numpy(p), torch.from_numpy(boxes), T, top_k=2, threshold=0.5,
                       backend="numba")[0],
        torch.Tensor,
    )  # fmt: skip


def test_with_landmarks_to_regions_and_custom_table() -> None:
    table = RegionTable(
        (Region("mouth", (12, 25), (2, 3), pad_x=0.5), Region("brow", (1,), (4,), min_w=1.0)),
        unit_points=(0, 1),
    )
    lm = np.array([[[0, 0], [10, 0], [20, 30], [40, 34], [25, 5]]], np.float32)
    boxes = landmarks_to_regions(lm, np.array([[100, 100]]), table)
    p = np.array([[0.9, 0.2, 0.95]], np.float32)  # columns: AU1, AU12, AU25
    au, _, bx = activated_list(p, boxes, table, top_k=3, threshold=0.5)
    assert au.tolist() == [[25, 1, -1]]
    np.testing.assert_allclose(bx[0, 0], [15, 30, 45, 34])
    np.testing.assert_allclose(bx[0, 1], [20, 5, 30, 5])


def test_bad_input_raises_value_error() -> None:
    p = np.zeros((2, A), np.float32)
    boxes = np.zeros((2, R, 4), np.float32)
    with pytest.raises(ValueError, match=rf"au_prob must be \[B, {A}\].*got shape \(2, 5\)"):
        activated_list(p[:, :5], boxes, T, top_k=2, threshold=0.5)
    with pytest.raises(ValueError, match=rf"region_boxes must be \[B, {R}, 4\].*\(2, 3, 4\)"):
        activated_list(p, boxes[:, :3], T, top_k=2, threshold=0.5)
    with pytest.raises(ValueError, match=r"share B"):
        activated_list(p[:1], boxes, T, top_k=2, threshold=0.5)
    with pytest.raises(ValueError, match=r"au_prob must be a floating dtype"):
        activated_list(p.astype(np.int64), boxes, T, top_k=2, threshold=0.5)
    with pytest.raises(ValueError, match=r"top_k must be an int >= 0, got -1"):
        activated_list(p, boxes, T, top_k=-1, threshold=0.5)
    with pytest.raises(ValueError, match=r"top_k"):
        activated_list(p, boxes, T, top_k=2.5, threshold=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"threshold must not be NaN"):
        activated_list(p, boxes, T, top_k=2, threshold=float("nan"))
    with pytest.raises(ValueError, match=r"one array family"):
        activated_list(p, torch.from_numpy(boxes), T, top_k=2, threshold=0.5)
    with pytest.raises(ValueError, match=r"table must be a RegionTable"):
        activated_list(p, boxes, "ibug", top_k=2, threshold=0.5)  # type: ignore[arg-type]


def test_reference_is_vectorised_on_device_tensors() -> None:
    """The reference takes tensors directly (the CUDA path) and returns tensors."""
    p, boxes = _random(np.random.default_rng(9), 5)
    au, _, bx = activated_list_torch(torch.from_numpy(p), torch.from_numpy(boxes), T, 3, 0.5)
    assert au.shape == (5, 3) and bx.shape == (5, 3, 4)
    want = activated_python(p, boxes, T, 3, 0.5)
    np.testing.assert_array_equal(au.numpy(), want[0])
