"""au_grounding_reward: hand tables, every backend against the reference, properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import linear_sum_assignment
from tag_kernels import batched_box_iou
from tag_kernels.au_reward import AUGroundingResult, au_grounding_reward

from ._data import make_batch

ALL = ("torch", "numba", "jax", "triton")
FIELDS = ("reward", "precision", "recall", "matched")


def _np(res: AUGroundingResult) -> dict[str, np.ndarray]:
    return {
        f: np.asarray(getattr(res, f).cpu() if hasattr(getattr(res, f), "cpu") else getattr(res, f))
        for f in FIELDS
    }


def _row(pred, pred_au, ref, ref_au, prob):
    """One-row batch from Python lists."""
    return (
        np.asarray(pred, np.float32).reshape(1, -1, 4), np.asarray(pred_au, np.int32).reshape(1, -1),
        np.asarray(ref, np.float32).reshape(1, -1, 4), np.asarray(ref_au, np.int32).reshape(1, -1),
        np.asarray(prob, np.float32).reshape(1, -1),
    )  # fmt: skip


SQ = [0, 0, 10, 10]
HAND = [
    # name, pred boxes, pred aus, ref boxes, ref aus, probs, kwargs, (reward, precision, recall, matched)
    (
        "perfect",
        [SQ, [20, 20, 30, 40]],
        [6, 12],
        [[20, 20, 30, 40], SQ],
        [12, 6],
        [0.9, 0.4],
        {},
        (1, 1, 1, 2),
    ),
    (
        "docstring",
        [SQ, [20, 20, 30, 30]],
        [12, 4],
        [[0, 0, 10, 5]],
        [12],
        [0.9],
        {},
        (1 / 3, 0.25, 0.5, 1),
    ),
    ("wrong AU class-aware", [SQ], [4], [SQ], [12], [1.0], {}, (0, 0, 0, 0)),
    ("wrong AU class-agnostic", [SQ], [4], [SQ], [12], [1.0], {"class_aware": False}, (1, 1, 1, 1)),
    (
        "no-AU box class-agnostic",
        [SQ],
        [0],
        [SQ],
        [12],
        [1.0],
        {"class_aware": False},
        (1, 1, 1, 1),
    ),
    (
        "hallucination costs precision",
        [SQ, [50, 50, 60, 60]],
        [6, 6],
        [SQ],
        [6],
        [1.0],
        {},
        (2 / 3, 0.5, 1, 1),
    ),
    (
        "weights by probability",
        [SQ],
        [6],
        [SQ, [50, 50, 60, 60]],
        [6, 12],
        [0.25, 0.75],
        {},
        (0.4, 1, 0.25, 1),
    ),
    (
        "zero/negative probs weigh 0",
        [SQ, [40, 0, 50, 10]],
        [6, 7],
        [SQ, [50, 50, 60, 60]],
        [6, 12],
        [0.5, -3],
        {},
        (2 / 3, 0.5, 1, 1),
    ),
    (
        "all-zero probs are uniform",
        [SQ],
        [6],
        [SQ, [50, 50, 60, 60]],
        [6, 12],
        [0, 0],
        {},
        (2 / 3, 1, 0.5, 1),
    ),
    (
        "NaN prob weighs 0",
        [SQ],
        [6],
        [SQ, [50, 50, 60, 60]],
        [6, 12],
        [1.0, np.nan],
        {},
        (1, 1, 1, 1),
    ),
    # Tie: k0 overlaps m0 and m1 equally (1/3); greedy gives it m0 (smaller m), so k1 gets m1 (0.3).
    (
        "tie to smaller m",
        [[5, 0, 15, 10], [17, 0, 20, 10]],
        [6, 6],
        [SQ, [10, 0, 20, 10]],
        [6, 6],
        [1, 1],
        {},
        ((1 / 3 + 0.3) / 2, (1 / 3 + 0.3) / 2, (1 / 3 + 0.3) / 2, 2),
    ),
    (
        "beta=2 favours recall",
        [SQ, [50, 50, 60, 60]],
        [6, 6],
        [SQ],
        [6],
        [1.0],
        {"beta": 2.0},
        (5 * 0.5 / (4 * 0.5 + 1), 0.5, 1, 1),
    ),
    (
        "degenerate box still counts in |P|",
        [SQ, [5, 5, 5, 9]],
        [6, 6],
        [SQ],
        [6],
        [1.0],
        {},
        (2 / 3, 0.5, 1, 1),
    ),
    (
        "both empty",
        [[0, 0, 0, 0]],
        [-1],
        [[0, 0, 0, 0]],
        [-1],
        [0.0],
        {"empty_value": 0.7},
        (0.7, 0.7, 0.7, 0),
    ),
    ("no predictions", [[0, 0, 0, 0]], [-1], [SQ], [6], [1.0], {}, (0, 0, 0, 0)),
    # AU 0 is an inspection box: no prediction for the class-aware reward
    ("inspection only, nothing detected", [SQ], [0], [SQ], [-1], [1.0], {}, (1, 1, 1, 0)),
    (
        "inspection costs no precision",
        [SQ, [50, 50, 60, 60]],
        [6, 0],
        [SQ],
        [6],
        [1.0],
        {},
        (1, 1, 1, 1),
    ),
    ("inspection only, AU detected", [SQ], [0], [SQ], [6], [1.0], {}, (0, 0, 0, 0)),
    (
        "inspection counts class-agnostic",
        [SQ, [50, 50, 60, 60]],
        [6, 0],
        [SQ],
        [6],
        [1.0],
        {"class_aware": False},
        (2 / 3, 0.5, 1, 1),
    ),
    ("no detections", [SQ], [6], [SQ], [-1], [1.0], {}, (0, 0, 0, 0)),
]


@pytest.mark.parametrize("be", ALL)
@pytest.mark.parametrize("case", HAND, ids=[c[0] for c in HAND])
def test_hand_table(case, be: str) -> None:
    _, pred, pau, ref, rau, prob, kw, want = case
    got = _np(au_grounding_reward(*_row(pred, pau, ref, rau, prob), backend=be, **kw))
    for f, w in zip(FIELDS, want):
        np.testing.assert_allclose(got[f][0], w, rtol=1e-6, atol=1e-7, err_msg=f"{f} ({be})")


SHAPES = [
    (1, 1, 1),
    (17, 3, 5),
    (33, 16, 16),
    (9, 31, 7),
    (4, 0, 5),
    (4, 5, 0),
    (0, 4, 4),
    (6, 64, 64),
]


@pytest.mark.parametrize("B,K,M", SHAPES)
@pytest.mark.parametrize("bad", [0.0, 0.25])
@pytest.mark.parametrize("class_aware", [True, False])
def test_backends_match_reference(
    backend: str, B: int, K: int, M: int, bad: float, class_aware: bool
) -> None:
    batch = make_batch(B * 1000 + K * 10 + M, B, K, M, bad=bad, pad=0.25)
    if B >= 4:  # some rows all padding
        batch["pred_au"][0] = -1
        batch["ref_au"][1] = -1
        batch["pred_au"][2] = -1
        batch["ref_au"][2] = -1
    kw = dict(beta=1.5, class_aware=class_aware, empty_value=0.5)
    want = _np(au_grounding_reward(**batch, backend="torch", **kw))
    got = _np(au_grounding_reward(**batch, backend=backend, **kw))
    for f in FIELDS:
        assert got[f].shape == (B,)
        np.testing.assert_allclose(got[f], want[f], rtol=2e-6, atol=2e-6, err_msg=f)
    assert got["matched"].dtype == np.int32
    for f in FIELDS[:3]:
        assert got[f].dtype == np.float32
        assert np.isfinite(got[f]).all() and (got[f] >= 0).all() and (got[f] <= 1).all()


def test_results_keep_family_and_device() -> None:
    b = make_batch(0, 8, 4, 4)
    t = au_grounding_reward(**{k: torch.from_numpy(v) for k, v in b.items()})
    assert all(isinstance(x, torch.Tensor) and x.device.type == "cpu" for x in t)
    jnp = pytest.importorskip("jax.numpy")
    j = au_grounding_reward(**{k: jnp.asarray(v) for k, v in b.items()})
    assert all(type(x).__module__.startswith("jax") for x in j)
    np.testing.assert_allclose(np.asarray(j.reward), t.reward.numpy(), rtol=1e-6)
    # int64 ids, float64 and bfloat16 boxes are accepted.
    t64 = au_grounding_reward(
        torch.from_numpy(b["pred_boxes"]).double(), torch.from_numpy(b["pred_au"]).long(),
        torch.from_numpy(b["ref_boxes"]).bfloat16(), torch.from_numpy(b["ref_au"]).long(),
        torch.from_numpy(b["ref_prob"]).half(),
    )  # fmt: skip
    assert t64.reward.dtype == torch.float32


def _args(B=2, K=3, M=4):
    return dict(
        pred_boxes=np.zeros((B, K, 4), np.float32), pred_au=np.zeros((B, K), np.int32),
        ref_boxes=np.zeros((B, M, 4), np.float32), ref_au=np.zeros((B, M), np.int32),
        ref_prob=np.zeros((B, M), np.float32),
    )  # fmt: skip


@pytest.mark.parametrize(
    "name,value,match",
    [
        ("pred_au", np.zeros((2, 4), np.int32), r"pred_au must have shape \(2, 3\), got \(2, 4\)"),
        ("ref_prob", np.zeros((2, 3), np.float32), r"ref_prob must have shape \(2, 4\)"),
        ("ref_boxes", np.zeros((3, 4, 4), np.float32), "ref_boxes must have batch size 2"),
        (
            "pred_boxes",
            np.zeros((2, 3, 2), np.float32),
            r"pred_boxes must be 3-d with last dim 4, got shape \(2, 3, 2\)",
        ),
        ("pred_au", np.zeros((2, 3), np.float32), "pred_au must be an integer dtype"),
        ("ref_prob", np.zeros((2, 4), np.int32), "ref_prob must be a floating dtype"),
        ("ref_au", torch.zeros(2, 4, dtype=torch.int32), "one array family"),
    ],
)
def test_bad_inputs_raise(name: str, value, match: str) -> None:
    args = _args()
    args[name] = value
    with pytest.raises(ValueError, match=match):
        au_grounding_reward(**args)


@pytest.mark.parametrize("kw,match", [({"beta": 0.0}, "beta"), ({"beta": float("nan")}, "beta"),
                                      ({"empty_value": 1.5}, "empty_value"), ({"backend": "cuda"}, "backend")])  # fmt: skip
def test_bad_options_raise(kw, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        au_grounding_reward(**_args(), **kw)


# ---------------------------------------------------------------- properties (hypothesis)

f32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(
    data=st.data(),
    B=st.integers(0, 4),
    K=st.integers(0, 6),
    M=st.integers(0, 6),
    beta=st.floats(0.05, 20),
    class_aware=st.booleans(),
    empty_value=st.floats(0, 1),
)
def test_finite_and_bounded_on_arbitrary_floats(
    data, B, K, M, beta, class_aware, empty_value
) -> None:
    batch = dict(
        pred_boxes=data.draw(arrays(np.float32, (B, K, 4), elements=f32)),
        pred_au=data.draw(arrays(np.int32, (B, K), elements=st.integers(-1, 3))),
        ref_boxes=data.draw(arrays(np.float32, (B, M, 4), elements=f32)),
        ref_au=data.draw(arrays(np.int32, (B, M), elements=st.integers(-1, 3))),
        ref_prob=data.draw(arrays(np.float32, (B, M), elements=f32)),
    )
    kw = dict(beta=beta, class_aware=class_aware, empty_value=empty_value)
    got = _np(au_grounding_reward(**batch, **kw))
    ref = _np(au_grounding_reward(**batch, backend="torch", **kw))
    for f in FIELDS[:3]:
        assert np.isfinite(got[f]).all() and (got[f] >= 0).all() and (got[f] <= 1).all()
        np.testing.assert_allclose(got[f], ref[f], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["matched"], ref["matched"])
    n_p = (batch["pred_au"] >= 0).sum(1)
    n_d = (batch["ref_au"] >= 0).sum(1)
    assert (got["matched"] <= np.minimum(n_p, n_d)).all()


@PROPS
@given(
    seed=st.integers(0, 2**31),
    K=st.integers(1, 12),
    M=st.integers(1, 12),
    class_aware=st.booleans(),
)
def test_invariant_to_slot_order(seed: int, K: int, M: int, class_aware: bool) -> None:
    b = make_batch(seed, 3, K, M, pad=0.2)
    rng = np.random.default_rng(seed + 1)
    pk, pm = rng.permutation(K), rng.permutation(M)
    perm = dict(
        pred_boxes=b["pred_boxes"][:, pk], pred_au=b["pred_au"][:, pk],
        ref_boxes=b["ref_boxes"][:, pm], ref_au=b["ref_au"][:, pm], ref_prob=b["ref_prob"][:, pm],
    )  # fmt: skip
    a = _np(au_grounding_reward(**b, class_aware=class_aware))
    c = _np(au_grounding_reward(**perm, class_aware=class_aware))
    for f in FIELDS:
        np.testing.assert_allclose(a[f], c[f], rtol=1e-5, atol=1e-6, err_msg=f)


@PROPS
@given(seed=st.integers(0, 2**31), B=st.integers(2, 9))
def test_rows_are_independent(seed: int, B: int) -> None:
    b = make_batch(seed, B, 6, 5, bad=0.1)
    full = _np(au_grounding_reward(**b))
    order = np.random.default_rng(seed).permutation(B)
    shuffled = _np(au_grounding_reward(**{k: v[order] for k, v in b.items()}))
    for f in FIELDS:
        np.testing.assert_array_equal(shuffled[f], full[f][order])
    i = int(order[0])
    alone = _np(au_grounding_reward(**{k: v[i : i + 1] for k, v in b.items()}))
    for f in FIELDS:
        np.testing.assert_array_equal(alone[f][0], full[f][i])


@PROPS
@given(
    seed=st.integers(0, 2**31),
    K=st.integers(1, 10),
    M=st.integers(1, 10),
    class_aware=st.booleans(),
)
def test_greedy_is_within_half_of_optimal(seed: int, K: int, M: int, class_aware: bool) -> None:
    """Greedy never beats the optimal assignment, and (a classic bound) gets at least half."""
    b = make_batch(seed, 1, K, M, pad=0.1)
    res = _np(au_grounding_reward(**b, class_aware=class_aware))
    present = b["pred_au"][0] > 0 if class_aware else b["pred_au"][0] >= 0  # AU 0: inspection
    n_p = int(present.sum())
    if n_p == 0 or (b["ref_au"][0] >= 0).sum() == 0:
        return
    iou = np.asarray(batched_box_iou(b["pred_boxes"], b["ref_boxes"]))[0]
    ok = present[:, None] & (b["ref_au"][0][None, :] >= 0)
    if class_aware:
        ok &= b["pred_au"][0][:, None] == b["ref_au"][0][None, :]
    w = np.where(ok, iou, 0.0)
    r, c = linear_sum_assignment(w, maximize=True)
    optimal = w[r, c].sum()
    greedy = float(res["precision"][0]) * n_p
    assert greedy <= optimal + 1e-5
    assert greedy >= 0.5 * optimal - 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_reference(dtype: torch.dtype) -> None:
    b = make_batch(7, 1024, 16, 16, bad=0.1)
    cpu = {k: torch.from_numpy(v) for k, v in b.items()}
    for k in ("pred_boxes", "ref_boxes"):
        cpu[k] = cpu[k].to(dtype)
    want = au_grounding_reward(**cpu, backend="torch")
    got = au_grounding_reward(**{k: v.cuda() for k, v in cpu.items()})
    assert got.reward.is_cuda
    for f in FIELDS:
        np.testing.assert_allclose(
            getattr(got, f).cpu().numpy(), getattr(want, f).numpy(), rtol=2e-6, atol=2e-6
        )
