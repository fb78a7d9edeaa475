"""The AU-grounding reward and the activated list.

``au_grounding_reward`` scores, for each of ``B`` completions, how well the model's predicted
``(AU, box)`` pairs agree with an AU detector's ``(AU, probability, box)`` entries: greedy
one-to-one matching by IoU, then an F-beta of IoU-weighted precision and probability-weighted
recall. The exact semantics are written down in :mod:`tag_kernels.au_reward._reference`.

Use it from any RL code::

    from tag_kernels.au_reward import au_grounding_reward

    res = au_grounding_reward(pred_boxes, pred_au, ref_boxes, ref_au, ref_prob)
    rewards = res.reward  # [B], same array family and device as the inputs
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from .. import _dispatch as d
from ..activated_list import activated_list
from ._reference import au_grounding_reward_reference

__all__ = ["AUGroundingResult", "activated_list", "au_grounding_reward"]

_OP = "au_grounding_reward"


class AUGroundingResult(NamedTuple):
    """Per-completion scores, each ``[B]`` in the input's array family and device."""

    reward: Any
    """F-beta of ``precision`` and ``recall``, float32 in ``[0, 1]``."""
    precision: Any
    """Sum of matched IoU over the number of predicted pairs, float32 in ``[0, 1]``."""
    recall: Any
    """Probability-weighted sum of matched IoU over the detector's entries, float32 in ``[0, 1]``."""
    matched: Any
    """Number of matched pairs, int32."""


def _validate(pred_boxes, pred_au, ref_boxes, ref_au, ref_prob, beta, empty_value) -> None:
    B, K, _ = d.check_shape(_OP, "pred_boxes", pred_boxes, 3, 4)
    Bm, M, _ = d.check_shape(_OP, "ref_boxes", ref_boxes, 3, 4)
    shapes = {
        "pred_au": (tuple(pred_au.shape), (B, K)),
        "ref_au": (tuple(ref_au.shape), (B, M)),
        "ref_prob": (tuple(ref_prob.shape), (B, M)),
    }
    if Bm != B:
        raise ValueError(
            f"{_OP}: ref_boxes must have batch size {B} like pred_boxes, got shape {(Bm, M, 4)}"
        )
    for name, (got, want) in shapes.items():
        if tuple(int(s) for s in got) != want:
            raise ValueError(f"{_OP}: {name} must have shape {want}, got {tuple(got)}")
    d.check_float(_OP, "pred_boxes", pred_boxes)
    d.check_float(_OP, "ref_boxes", ref_boxes)
    d.check_float(_OP, "ref_prob", ref_prob)
    d.check_int(_OP, "pred_au", pred_au)
    d.check_int(_OP, "ref_au", ref_au)
    if not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"{_OP}: beta must be a positive finite number, got {beta!r}")
    if not (np.isfinite(empty_value) and 0.0 <= empty_value <= 1.0):
        raise ValueError(f"{_OP}: empty_value must be in [0, 1], got {empty_value!r}")


def au_grounding_reward(
    pred_boxes: Any,
    pred_au: Any,
    ref_boxes: Any,
    ref_au: Any,
    ref_prob: Any,
    *,
    beta: float = 1.0,
    class_aware: bool = True,
    empty_value: float = 1.0,
    backend: str | None = None,
) -> AUGroundingResult:
    """Batched AU-grounding reward.

    Args:
        pred_boxes: ``Tensor[B, K, 4]`` predicted boxes, ``xyxy`` image pixels (float).
        pred_au: ``Tensor[B, K]`` AU ids (int), ``-1`` marks padding. ``0`` is a box with no AU
            named, an inspection: when ``class_aware`` it is not a prediction at all (no
            precision cost; a row of inspections only, against an empty detector list, scores
            ``empty_value``); class-agnostic matching counts it like any box.
        ref_boxes: ``Tensor[B, M, 4]`` detector boxes (float).
        ref_au: ``Tensor[B, M]`` detector AU ids (int), ``-1`` marks padding.
        ref_prob: ``Tensor[B, M]`` detector probabilities, the recall weights (float).
        beta: F-beta's beta (> 0); ``beta > 1`` favours recall.
        class_aware: match only pairs with the same AU; ``False`` matches regions only.
        empty_value: the reward (and precision, recall) of a row with no prediction and no
            detector entry, in ``[0, 1]``.
        backend: ``None`` picks from the input (CUDA tensor: ``"triton"``; CPU tensor or NumPy:
            ``"numba"``; JAX: ``"jax"``); or force ``"torch"`` (the reference), ``"numba"``,
            ``"triton"`` or ``"jax"``.

    Returns:
        :class:`AUGroundingResult` of ``[B]`` arrays in the input's family and device.

    Raises:
        ValueError: wrong shapes or dtypes, mixed array families or devices, bad ``beta`` /
            ``empty_value``.

    Example:
        >>> import numpy as np
        >>> pred_boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30]]], np.float32)
        >>> pred_au = np.array([[12, 4]], np.int32)
        >>> ref_boxes = np.array([[[0, 0, 10, 5]]], np.float32)
        >>> ref_au = np.array([[12]], np.int32)
        >>> ref_prob = np.array([[0.9]], np.float32)
        >>> r = au_grounding_reward(pred_boxes, pred_au, ref_boxes, ref_au, ref_prob)
        >>> [round(float(x), 4) for x in (r.reward[0], r.precision[0], r.recall[0])], int(r.matched[0])
        ([0.3333, 0.25, 0.5], 1)
    """
    arrays = dict(
        pred_boxes=pred_boxes,
        pred_au=pred_au,
        ref_boxes=ref_boxes,
        ref_au=ref_au,
        ref_prob=ref_prob,
    )
    fam = d.common_family(_OP, **arrays)
    _validate(pred_boxes, pred_au, ref_boxes, ref_au, ref_prob, beta, empty_value)
    be = d.pick_backend(_OP, fam, pred_boxes, backend)
    kw = dict(beta=float(beta), class_aware=bool(class_aware), empty_value=float(empty_value))

    if be == "numba":
        from ._numba import au_reward_numba

        out = au_reward_numba(
            d.to_numpy(pred_boxes, np.float32), d.to_numpy(pred_au, np.int32),
            d.to_numpy(ref_boxes, np.float32), d.to_numpy(ref_au, np.int32),
            d.to_numpy(ref_prob, np.float32), **kw,
        )  # fmt: skip
        return AUGroundingResult(*(d.from_numpy(x, fam, pred_boxes) for x in out))

    if be == "jax":
        import jax.numpy as jnp

        from ._jax import au_reward_jax

        out = au_reward_jax(
            d.to_jax(pred_boxes, jnp.float32), d.to_jax(pred_au, jnp.int32),
            d.to_jax(ref_boxes, jnp.float32), d.to_jax(ref_au, jnp.int32),
            d.to_jax(ref_prob, jnp.float32), kw["beta"] ** 2, kw["empty_value"],
            class_aware=kw["class_aware"],
        )  # fmt: skip
        return AUGroundingResult(*(d.from_jax(x, fam, pred_boxes) for x in out))

    dev = pred_boxes.device if fam == "torch" else torch.device("cpu")
    if be == "triton":
        from ._triton import au_reward_triton

        def keep_float(x: Any) -> torch.Tensor:
            # Half-precision CUDA inputs are read as-is and upcast inside the kernel.
            if fam == "torch" and x.dtype in (torch.float16, torch.bfloat16, torch.float32):
                return x.detach().contiguous()
            return d.to_torch(x, torch.float32, dev)

        out = au_reward_triton(
            keep_float(pred_boxes), d.to_torch(pred_au, torch.int32, dev),
            keep_float(ref_boxes), d.to_torch(ref_au, torch.int32, dev),
            keep_float(ref_prob), **kw,
        )  # fmt: skip
        return AUGroundingResult(*(d.from_torch(x, fam, pred_boxes) for x in out))

    out = au_grounding_reward_reference(
        d.to_torch(pred_boxes, torch.float32, dev), d.to_torch(pred_au, torch.int64, dev),
        d.to_torch(ref_boxes, torch.float32, dev), d.to_torch(ref_au, torch.int64, dev),
        d.to_torch(ref_prob, torch.float32, dev), **kw,
    )  # fmt: skip
    return AUGroundingResult(*(d.from_torch(x, fam, pred_boxes) for x in out))
