"""landmarks_to_regions: every backend against the plain-torch reference, hand-written boxes,
degenerate input, dispatch/validation, the RegionTable API and the geometry on a real face."""

from __future__ import annotations

import os

import torch

# Triton kernels read TRITON_INTERPRET when they are defined, so set it before tag_kernels is
# imported (the kernels module is imported lazily on first use; a conftest may also set it).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib.util
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tag_kernels.regions import (
    IBUG68_REGIONS,
    Region,
    RegionTable,
    landmarks_to_regions,
)

from ._data import regions_python

CUDA = torch.cuda.is_available()
TRITON_DEV = "cuda" if CUDA else "cpu"
ATOL, RTOL = 1e-3, 1e-5  # float32; backends may differ by an ulp in d (sqrt) or via FMA

# ---------------------------------------------------------------- a small hand-checked table
# points: p0=(10,20), p1=(14,20) -> d = 4; p2=(30,40), p3=(36,50), p4=(100,5); L = 5
TINY = RegionTable(
    name="tiny",
    unit_points=(0, 1),
    regions=(
        Region("plain", (1,), (2, 3)),
        Region("shift_pad", (2, 3), (2, 3), dx=0.5, dy=-1.0, pad_x=0.25, pad_y=0.5),
        Region("min_size", (4,), (2,), min_w=2.0, min_h=1.0),
        Region("clamped", (5,), (4,), pad_x=1.0, pad_y=2.0),
        Region("shrunk", (6,), (2, 3), pad_x=-1.0),
    ),
)
TINY_LM = np.array([[10, 20], [14, 20], [30, 40], [36, 50], [100, 5]], np.float32)
TINY_SIZE = np.array([64, 56], np.float32)
TINY_EXPECTED = np.array(
    [
        [30, 40, 36, 50],  # bbox of p2, p3
        [31, 34, 39, 48],  # x: 30+(0.5-0.25)*4, 36+(0.5+0.25)*4; y: 40+(-1-0.5)*4, 50+(-1+0.5)*4
        [26, 38, 34, 42],  # one point, min size 2d x 1d = 8 x 4 centred on (30, 40)
        [64, 0, 64, 13],  # (96, -3, 104, 13) clamped to [0,64]x[0,56]
        [33, 40, 33, 50],  # x inverted by the negative pad (34 > 32) -> zero width at 33
    ],
    np.float32,
)


def _backends() -> list[str]:
    return ["torch", "numba", "triton", "jax"]


def _run(backend: str, lm: np.ndarray, size: np.ndarray, table: RegionTable) -> np.ndarray:
    """Run one backend on NumPy data in its native family; return NumPy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # interpreter: inf - inf in the mask
        if backend == "triton":
            out = landmarks_to_regions(
                torch.from_numpy(lm).to(TRITON_DEV),
                torch.from_numpy(size).to(TRITON_DEV),
                table,
                backend="triton",
            )
            return out.cpu().numpy()
        if backend == "jax":
            return np.asarray(landmarks_to_regions(jnp.asarray(lm), jnp.asarray(size), table))
        if backend == "numba":
            return landmarks_to_regions(lm, size, table, backend="numba")
        return landmarks_to_regions(torch.from_numpy(lm), torch.from_numpy(size), table).numpy()


def _reference(lm: np.ndarray, size: np.ndarray, table: RegionTable) -> np.ndarray:
    out = landmarks_to_regions(
        torch.from_numpy(lm), torch.from_numpy(size), table, backend="torch"
    ).numpy()
    assert out.dtype == np.float32
    return out


def _python_per_face(lm: np.ndarray, size: np.ndarray, table: RegionTable) -> np.ndarray:
    """An independent plain-Python reading of the recipe (float64), to check the reference."""
    return np.asarray(regions_python(lm, size, table), np.float64).reshape(-1, len(table), 4)


def _canonical_face(rng: np.random.Generator, B: int, scale: float = 1.0) -> np.ndarray:
    """Plausible iBUG-68 faces: a fixed mean shape, jittered, scaled and translated."""
    t = np.linspace(0, np.pi, 17)
    jaw = np.stack([50 - 45 * np.cos(t), 55 + 45 * np.sin(t) * 1.0], -1)
    rb = np.stack([np.linspace(15, 42, 5), [33, 28, 26, 27, 30]], -1)
    lb = np.stack([np.linspace(58, 85, 5), [30, 27, 26, 28, 33]], -1)
    nose = np.array([[50, 40], [50, 47], [50, 54], [50, 60], [43, 64], [46, 65], [50, 66],
                     [54, 65], [57, 64]])  # fmt: skip
    re = np.array([[24, 42], [29, 39], [35, 39], [40, 42], [35, 44], [29, 44]])
    le = re[[3, 2, 1, 0, 5, 4]].copy()  # 42..47 mirror 39, 38, 37, 36, 41, 40
    le[:, 0] = 100 - le[:, 0]
    outer = np.array([[35, 78], [40, 75], [45, 73], [50, 74], [55, 73], [60, 75], [65, 78],
                      [60, 83], [55, 86], [50, 87], [45, 86], [40, 83]])  # fmt: skip
    inner = np.array([[38, 78], [45, 77], [50, 77.5], [55, 77], [62, 78], [55, 80], [50, 80.5],
                      [45, 80]])  # fmt: skip
    mean = np.concatenate([jaw, rb, lb, nose, re, le, outer, inner]).astype(np.float64)
    assert mean.shape == (68, 2)
    s = rng.uniform(0.8, 3.0, (B, 1, 1)) * scale
    off = rng.uniform(0, 200, (B, 1, 2))
    return (mean[None] * s + off + rng.normal(0, 0.7, (B, 68, 2))).astype(np.float32)


def _adversarial_batch(rng: np.random.Generator, B: int, L: int = 68) -> tuple[np.ndarray, ...]:
    lm = np.zeros((B, L, 2), np.float32)
    lm[:, :68] = _canonical_face(rng, B)
    if L > 68:
        lm[:, 68:] = rng.uniform(-50, 500, (B, L - 68, 2))
    size = rng.uniform(80, 500, (B, 2)).astype(np.float32)
    if B >= 12:
        lm[0, 20] = np.nan  # one landmark of AU1's region
        lm[1, 39] = np.nan  # an eye corner: every region of the face degenerate
        lm[2, 42] = lm[2, 39]  # d == 0
        lm[3, 57, 1] = np.inf
        lm[4] -= 150  # partly off the left/top border: clamped at 0
        lm[5] += 400  # off the right/bottom border: clamped at w, h
        size[6] = [0, 100]  # empty image
        size[7, 1] = np.nan
        lm[8] *= 40  # large coordinates
        lm[9, :, :] = 100.0  # every point equal -> d == 0
        lm[10, 42] = lm[10, 39] + np.float32(1e-3)  # tiny d
        size[11, 0] = -5.0
    return lm, size


# ---------------------------------------------------------------- hand-written expectations
@pytest.mark.parametrize("backend", _backends())
def test_tiny_table_hand_written(backend: str) -> None:
    lm = np.stack([TINY_LM] * 5)
    size = np.stack([TINY_SIZE] * 5)
    lm[1, 1] = lm[1, 0]  # d == 0 -> all zero
    lm[2, 3, 0] = np.nan  # p3 NaN -> regions using p3 zero, others unchanged
    size[3] = [0, 56]  # zero width image -> all zero
    size[4] = [np.nan, 56]
    got = _run(backend, lm, size, TINY)
    assert got.shape == (5, 5, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], TINY_EXPECTED, atol=1e-5)
    np.testing.assert_array_equal(got[1], 0)
    exp2 = TINY_EXPECTED.copy()
    exp2[[0, 1, 4]] = 0
    np.testing.assert_allclose(got[2], exp2, atol=1e-5)
    np.testing.assert_array_equal(got[3:], 0)


def test_ibug_lip_corners_hand_written() -> None:
    lm = np.full((1, 68, 2), 50.0, np.float32)
    lm[0, 39], lm[0, 42] = (40, 60), (60, 60)  # d = 20
    lm[0, 48], lm[0, 54] = (30, 100), (70, 104)
    reg = IBUG68_REGIONS.regions[IBUG68_REGIONS.region_of(12)]
    assert reg.landmarks == (48, 54) and reg.dx == 0 and reg.dy == 0
    expected = [
        30 - 20 * reg.pad_x,
        100 - 20 * reg.pad_y,
        70 + 20 * reg.pad_x,
        104 + 20 * reg.pad_y,
    ]
    for be in _backends():
        got = _run(be, lm, np.array([[200, 200]], np.float32), IBUG68_REGIONS)
        np.testing.assert_allclose(got[0, IBUG68_REGIONS.region_of(12)], expected, atol=1e-4)


# ---------------------------------------------------------------- backends vs reference
def test_reference_matches_plain_python() -> None:
    rng = np.random.default_rng(1)
    lm, size = _adversarial_batch(rng, 64)
    ref = _reference(lm, size, IBUG68_REGIONS)
    np.testing.assert_allclose(
        ref, _python_per_face(lm, size, IBUG68_REGIONS), atol=2e-3, rtol=1e-5
    )
    lm2 = np.stack([TINY_LM] * 3) + rng.normal(0, 3, (3, 5, 2)).astype(np.float32)
    size2 = np.full((3, 2), 60, np.float32)
    np.testing.assert_allclose(
        _reference(lm2, size2, TINY), _python_per_face(lm2, size2, TINY), atol=1e-4
    )


@pytest.mark.parametrize("backend", ["numba", "triton", "jax"])
@pytest.mark.parametrize(("B", "L"), [(0, 68), (1, 68), (13, 68), (200, 71), (257, 68)])
def test_backend_matches_reference_ibug(backend: str, B: int, L: int) -> None:
    rng = np.random.default_rng(B * 7 + L)
    lm, size = _adversarial_batch(rng, B, L)
    ref = _reference(lm, size, IBUG68_REGIONS)
    got = _run(backend, lm, size, IBUG68_REGIONS)
    assert got.shape == (B, len(IBUG68_REGIONS), 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=ATOL, rtol=RTOL)
    if B >= 12:  # the adversarial rows really are degenerate / clamped
        assert (ref[1] == 0).all() and (ref[2] == 0).all() and (ref[9] == 0).all()
        assert (ref[0, IBUG68_REGIONS.region_of(1)] == 0).all()
        assert ref[0, IBUG68_REGIONS.region_of(12)].any()
        assert (ref[[6, 7, 11]] == 0).all()
        assert (ref[4, :, :2] == 0).any() and (ref[5, :, 2:] == size[5]).any()


@pytest.mark.parametrize("backend", ["numba", "triton", "jax"])
def test_backend_matches_reference_random_tables(backend: str) -> None:
    """Random tables (odd L, odd P, negative pads, min sizes) on random points."""
    rng = np.random.default_rng(5)
    for L in (3, 13):
        regs = []
        for r in range(int(rng.integers(1, 6))):
            n = int(rng.integers(1, min(L, 7) + 1))
            regs.append(
                Region(
                    f"r{r}",
                    (r + 1,),
                    tuple(int(i) for i in rng.choice(L, n, replace=False)),
                    dx=float(rng.uniform(-1, 1)),
                    dy=float(rng.uniform(-1, 1)),
                    pad_x=float(rng.uniform(-0.5, 1)),
                    pad_y=float(rng.uniform(-0.5, 1)),
                    min_w=float(rng.choice([0, rng.uniform(0, 2)])),
                    min_h=float(rng.choice([0, rng.uniform(0, 2)])),
                )
            )
        table = RegionTable(tuple(regs), unit_points=(0, L - 1))
        lm = rng.uniform(-20, 120, (37, L, 2)).astype(np.float32)
        lm[3, 0] = np.nan
        size = rng.uniform(10, 100, (37, 2)).astype(np.float32)
        np.testing.assert_allclose(
            _run(backend, lm, size, table), _reference(lm, size, table), atol=ATOL, rtol=RTOL
        )


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 9),
    st.lists(
        st.one_of(
            st.floats(-1e4, 1e4, width=32),
            st.sampled_from([float("nan"), float("inf"), -float("inf"), 3e38]),
        ),
        min_size=10,
        max_size=10,
    ),
)
def test_numba_property_bounds_and_agreement(B: int, vals: list[float]) -> None:
    """Hypothesis: any landmarks -> finite boxes inside the image, never inverted, and equal
    to the reference (rows are independent: row b only depends on face b)."""
    rng = np.random.default_rng(B)
    lm = rng.uniform(0, 100, (B, 5, 2)).astype(np.float32)
    flat = lm.reshape(-1)
    flat[: min(len(vals), flat.size)] = np.asarray(vals[: flat.size], np.float32)
    size = np.full((B, 2), 64, np.float32)
    got = landmarks_to_regions(lm, size, TINY)
    assert np.isfinite(got).all()
    assert (got[..., 0] <= got[..., 2]).all() and (got[..., 1] <= got[..., 3]).all()
    assert (got >= 0).all() and (got[..., [0, 2]] <= 64).all() and (got[..., [1, 3]] <= 64).all()
    np.testing.assert_allclose(got, _reference(lm, size, TINY), atol=ATOL, rtol=RTOL)
    for b in range(B):  # rows are independent of one another
        np.testing.assert_array_equal(
            landmarks_to_regions(lm[b : b + 1], size[b : b + 1], TINY)[0], got[b]
        )


def test_input_dtypes_and_families() -> None:
    rng = np.random.default_rng(3)
    lm, size = _adversarial_batch(rng, 20)
    ref = _reference(lm, size, IBUG68_REGIONS)
    # float64 numpy and integer image_size -> numba, numpy float32 out
    int_size = np.nan_to_num(size).round().astype(np.int64)
    out = landmarks_to_regions(lm.astype(np.float64), int_size)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    ref_int = _reference(lm, int_size.astype(np.float32), IBUG68_REGIONS)
    np.testing.assert_allclose(out, ref_int, atol=ATOL, rtol=RTOL)
    # torch CPU (bf16 and fp16 landmarks are upcast) -> torch float32 on cpu
    for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        t_lm = torch.from_numpy(lm).to(dt)
        t_out = landmarks_to_regions(t_lm, torch.from_numpy(size))
        assert isinstance(t_out, torch.Tensor) and t_out.dtype == torch.float32
        assert t_out.device.type == "cpu"
        t_ref = landmarks_to_regions(t_lm, torch.from_numpy(size), backend="torch")
        np.testing.assert_allclose(t_out.numpy(), t_ref.numpy(), atol=ATOL, rtol=RTOL)
        if dt not in (torch.float64, torch.bfloat16):
            continue  # the interpreter is slow; fp32 is covered everywhere else
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            t_tri = landmarks_to_regions(
                t_lm.to(TRITON_DEV), torch.from_numpy(size).to(TRITON_DEV), backend="triton"
            )
        np.testing.assert_allclose(t_tri.cpu().numpy(), t_ref.numpy(), atol=ATOL, rtol=RTOL)
    # jax in -> jax out
    j_out = landmarks_to_regions(jnp.asarray(lm), jnp.asarray(size))
    assert not isinstance(j_out, np.ndarray) and j_out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(j_out), ref, atol=ATOL, rtol=RTOL)
    # backend override keeps the input family
    assert isinstance(landmarks_to_regions(lm, size, backend="jax"), np.ndarray)
    assert isinstance(landmarks_to_regions(lm, size, backend="torch"), np.ndarray)
    assert isinstance(
        landmarks_to_regions(torch.from_numpy(lm), torch.from_numpy(size), backend="jax"),
        torch.Tensor,
    )


def test_non_contiguous_input() -> None:
    rng = np.random.default_rng(4)
    lm, size = _adversarial_batch(rng, 30)
    ref = _reference(lm, size, IBUG68_REGIONS)
    big = torch.zeros(30, 68, 4)
    big[..., ::2] = torch.from_numpy(lm)
    strided = big[..., ::2]
    assert not strided.is_contiguous()
    for be in ("numba", "torch", "jax"):
        out = landmarks_to_regions(strided, torch.from_numpy(size), backend=be)
        np.testing.assert_allclose(out.numpy(), ref, atol=ATOL, rtol=RTOL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tri = landmarks_to_regions(
            strided.to(TRITON_DEV), torch.from_numpy(size).to(TRITON_DEV), backend="triton"
        )
    np.testing.assert_allclose(tri.cpu().numpy(), ref, atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------- validation
def test_bad_input_raises_value_error_naming_argument() -> None:
    lm = np.zeros((2, 68, 2), np.float32)
    size = np.ones((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"landmarks must be \[B, L, 2\], got shape \(2, 68\)"):
        landmarks_to_regions(lm[..., 0], size)
    with pytest.raises(ValueError, match=r"landmarks .*got shape \(2, 68, 3\)"):
        landmarks_to_regions(np.zeros((2, 68, 3), np.float32), size)
    with pytest.raises(ValueError, match=r"image_size must be \[B, 2\].*got shape \(2,\)"):
        landmarks_to_regions(lm, size[:, 0])
    with pytest.raises(ValueError, match=r"share B.*\(2, 68, 2\).*\(3, 2\)"):
        landmarks_to_regions(lm, np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"L >= 68.*got shape \(2, 60, 2\)"):
        landmarks_to_regions(lm[:, :60], size)
    with pytest.raises(ValueError, match=r"landmarks must be a floating dtype, got int"):
        landmarks_to_regions(lm.astype(np.int32), size)
    with pytest.raises(ValueError, match=r"image_size must be a real"):
        landmarks_to_regions(lm, size.astype(bool))
    with pytest.raises(ValueError, match=r"one array family.*landmarks=numpy.*image_size=torch"):
        landmarks_to_regions(lm, torch.from_numpy(size))
    with pytest.raises(ValueError, match=r"one array family"):
        landmarks_to_regions(jnp.asarray(lm), size)
    with pytest.raises(ValueError, match=r"backend must be one of"):
        landmarks_to_regions(lm, size, backend="cuda")
    with pytest.raises(ValueError, match=r"table must be a RegionTable"):
        landmarks_to_regions(lm, size, table={"a": 1})  # type: ignore[arg-type]
    if not CUDA and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        with pytest.raises(ValueError, match="triton"):
            landmarks_to_regions(lm, size, backend="triton")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_mixed_devices_raise() -> None:
    with pytest.raises(ValueError, match="one device"):
        landmarks_to_regions(torch.zeros(1, 68, 2, device="cuda"), torch.ones(1, 2))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_dispatch_runs_triton_on_device() -> None:
    rng = np.random.default_rng(8)
    lm, size = _adversarial_batch(rng, 1000)
    out = landmarks_to_regions(torch.from_numpy(lm).cuda(), torch.from_numpy(size).cuda())
    assert out.is_cuda and out.dtype == torch.float32
    ref = _reference(lm, size, IBUG68_REGIONS)
    np.testing.assert_allclose(out.cpu().numpy(), ref, atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------- the table
def test_ibug_table_api() -> None:
    t = IBUG68_REGIONS
    want = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 24, 25, 26, 43)
    assert t.aus == want
    assert len(t) == len(t.regions) == 12
    assert t.region_of(4) == t.region_of(9)  # shared glabella / nose-root box (authors' figure)
    assert len({t.region_of(a) for a in (12, 14, 15, 20)}) == 1
    assert t.region_of(1) != t.region_of(2) != t.region_of(4)
    for a in want:
        assert a in t.regions[t.region_of(a)].aus
        assert t.regions[t.region_of(a)].source  # every entry names its literature source
    with pytest.raises(KeyError, match="AU3 "):
        t.region_of(3)
    with pytest.raises(KeyError, match="AU99"):
        t.region_of(99)
    assert t.regions[t.region_of(1)].landmarks == (20, 21, 22, 23)
    assert set(t.regions[t.region_of(2)].landmarks) == {17, 18, 25, 26}
    p = t.packed
    assert p.index.shape == (12, max(len(r.landmarks) for r in t.regions))
    assert p.index.dtype == np.int32 and p.coef.dtype == np.float32 and p.coef.shape == (12, 6)
    for r, reg in enumerate(t.regions):
        n = len(reg.landmarks)
        assert tuple(p.index[r, :n]) == reg.landmarks and (p.index[r, n:] == -1).all()
        assert p.count[r] == n
        # the box recipe's x-range lies on either side of the shift, and minima are kept
        assert p.coef[r, 0] <= p.coef[r, 1] or reg.pad_x < 0
        np.testing.assert_allclose(p.coef[r, 4:], [reg.min_w, reg.min_h])
    assert tuple(p.aus) == want
    assert [t.region_of(a) for a in want] == list(p.au_region)
    assert p.au_to_region.shape == (44,)
    for a in range(44):
        assert p.au_to_region[a] == (t.region_of(a) if a in want else -1)
    assert p.unit_points == (39, 42) and p.min_landmarks == 68


def test_custom_table_validation() -> None:
    r = Region("a", (1,), (0,))
    with pytest.raises(ValueError, match="AU1 is in both"):
        RegionTable((r, Region("b", (1, 2), (1,))))
    with pytest.raises(ValueError, match="duplicate region name"):
        RegionTable((r, Region("a", (2,), (1,))))
    with pytest.raises(ValueError, match="landmarks must not be empty"):
        Region("x", (1,), ())
    with pytest.raises(ValueError, match="min_w/min_h must be >= 0"):
        Region("x", (1,), (0,), min_w=-1)
    with pytest.raises(ValueError, match="pad_x must be finite"):
        Region("x", (1,), (0,), pad_x=float("nan"))
    with pytest.raises(ValueError, match="AU numbers must be positive"):
        Region("x", (0,), (0,))
    t = RegionTable((Region("m", (25, 26), (3,)), Region("b", (1,), (0, 1))), unit_points=(0, 2))
    # packed coefficients, written out by hand: (x_lo, x_hi, y_lo, y_hi, min_w, min_h) in d
    hand = RegionTable(
        (Region("h", (1,), (0,), dx=0.25, dy=-0.5, pad_x=0.75, pad_y=0.125, min_w=1.5, min_h=2.0),),
        unit_points=(0, 1),
    )
    np.testing.assert_array_equal(
        hand.packed.coef, np.array([[-0.5, 1.0, -0.625, -0.375, 1.5, 2.0]], np.float32)
    )
    assert t.aus == (1, 25, 26) and t.region_of(26) == 0 and t.region_of(1) == 1
    assert t.packed.min_landmarks == 4 and t.region_named("b") == 1


# ---------------------------------------------------------------- geometry on a real face
def _dlib_astronaut() -> tuple[np.ndarray, tuple[int, int, int, int], tuple[int, int]] | None:
    try:
        import dlib
        from skimage import data
    except ImportError:
        return None
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        return None
    model = Path(spec.origin).parent / "models" / "shape_predictor_68_face_landmarks.dat"
    img = data.astronaut()
    rects = dlib.get_frontal_face_detector()(img, 1)
    if not rects:
        return None
    r = rects[0]
    shape = dlib.shape_predictor(str(model))(img, r)
    lm = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
    return lm, (r.left(), r.top(), r.right(), r.bottom()), (img.shape[1], img.shape[0])


def test_ibug_geometry_on_astronaut() -> None:
    got = _dlib_astronaut()
    if got is None:
        pytest.skip("dlib / face_recognition_models / skimage not available")
    lm, rect, (w, h) = got
    boxes = landmarks_to_regions(lm[None], np.array([[w, h]], np.float32))[0]
    t = IBUG68_REGIONS
    # face box: dlib's rectangle (tops of AU1/AU2) united with the landmarks' bbox (chin)
    fx1 = min(rect[0], lm[:, 0].min())
    fy1 = min(rect[1], lm[:, 1].min())
    fx2 = max(rect[2], lm[:, 0].max())
    fy2 = max(rect[3], lm[:, 1].max())
    assert (boxes[:, 0] >= fx1).all() and (boxes[:, 1] >= fy1).all()
    assert (boxes[:, 2] <= fx2).all() and (boxes[:, 3] <= fy2).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    for name, b in zip((r.name for r in t.regions), boxes):
        if name not in ("chin",):  # dlib's rectangle cuts the chin off on this face
            assert b[1] >= rect[1] and b[0] >= rect[0] and b[2] <= rect[2], name
    au12 = boxes[t.region_of(12)]
    for k in (48, 54):
        assert au12[0] <= lm[k, 0] <= au12[2] and au12[1] <= lm[k, 1] <= au12[3]
    eye_top = lm[36:48, 1].min()
    for au in (1, 2):
        assert boxes[t.region_of(au), 3] < eye_top  # bottom above the eyes
        assert boxes[t.region_of(au), 1] < lm[17:27, 1].min()  # reaches above the brows
    assert boxes[t.region_of(17), 1] > lm[55:60, 1].max()  # chin below the lower lip
    assert boxes[t.region_of(17), 3] <= lm[8, 1]
    b6 = boxes[t.region_of(6)]
    assert b6[1] > eye_top and b6[3] < lm[48:60, 1].min()  # cheeks: under the eyes, above mouth
    b43 = boxes[t.region_of(43)]
    assert (b43[[0, 1]] <= lm[36:48].min(0)).all() and (b43[[2, 3]] >= lm[36:48].max(0)).all()


# AOT compilation of the kernel to sm_80/sm_90 cubin: tests/kernels/test_aot_compile.py
# (it reads tag_kernels.regions._triton.aot_compile_specs()).


def test_jax_table_first_packed_inside_a_jit_trace_does_not_leak_tracers():
    """The table's packed JAX arrays are cached on first use; packed inside a jit trace they
    must still be concrete arrays, or the next trace would see the first one's tracers."""
    jax = pytest.importorskip("jax")
    import dataclasses

    from tag_kernels import IBUG68_REGIONS, landmarks_to_regions

    table = dataclasses.replace(IBUG68_REGIONS)  # a fresh object: an empty device cache
    lm = jnp.asarray(_canonical_face(np.random.default_rng(0), 1))
    wh = jnp.asarray([[200.0, 200.0]], dtype=jnp.float32)

    @jax.jit
    def boxes(x):
        return landmarks_to_regions(x, wh, table)

    first = np.asarray(boxes(lm))
    cached = table.on_device("jax")
    assert not any(isinstance(a, jax.core.Tracer) for a in cached)
    second = np.asarray(jax.jit(lambda x: landmarks_to_regions(x * 1.0, wh, table))(lm))
    np.testing.assert_allclose(first, second)
