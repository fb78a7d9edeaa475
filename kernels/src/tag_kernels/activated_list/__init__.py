"""``activated_list``: the top-K detected AUs over a threshold, each with its region's box.

Semantics, one row (face) at a time:

1. Column ``j`` of ``au_prob`` is AU ``table.aus[j]``; its box is
   ``region_boxes[:, table.region_of(table.aus[j])]``.
2. Probabilities are cast to float32 and so is ``threshold``. An AU is *activated* when
   ``prob >= threshold`` (inclusive, so ``threshold=0.5`` keeps a 0.5). NaN is never activated.
3. Activated AUs are ordered by descending probability; ties go to the smaller column (i.e.
   the smaller AU number). The first ``top_k`` fill the output slots in that order.
4. Unused slots are padding: AU ``-1``, probability ``0`` and box ``(0, 0, 0, 0)``.

Probabilities and boxes are passed through unchanged otherwise (an activated ``+inf``
probability stays ``+inf``; a region box is copied as it is).

The plain-torch ``_reference.activated_list_torch`` is the specification; it is vectorised
(no per-row Python) and also serves CUDA tensors, on device and without host
synchronisation. ``_numba.activated_list_numba`` serves NumPy arrays and CPU tensors;
``_jax.activated_list_jax`` serves JAX arrays. There is no Triton kernel for this op: ``backend="triton"`` runs the torch
implementation on the tensors' device.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .._dispatch import (
    common_family,
    from_jax,
    from_numpy,
    from_torch,
    pick_backend,
    to_jax,
    to_numpy,
    to_torch,
)
from ..regions._table import RegionTable
from ._reference import activated_list_torch

__all__ = ["activated_list"]

_OP = "activated_list"


def activated_list(
    au_prob: Any,
    region_boxes: Any,
    table: RegionTable,
    *,
    top_k: int,
    threshold: float,
    backend: str | None = None,
) -> tuple[Any, Any, Any]:
    """The top-``top_k`` activated AUs of each face, with their probabilities and region boxes.

    Args:
        au_prob: ``[B, A]`` float, ``A = len(table.aus)``; column ``j`` is AU ``table.aus[j]``.
        region_boxes: ``[B, R, 4]`` float xyxy, ``R = len(table)`` (e.g. the output of
            ``landmarks_to_regions``), same family/device as ``au_prob``.
        table: the :class:`~tag_kernels.RegionTable` that maps AUs to region rows.
        top_k: number of output slots (``>= 0``; may exceed ``A``).
        threshold: an AU is activated when ``prob >= threshold`` (inclusive, in float32);
            NaN probabilities never are. ``threshold`` itself must not be NaN.
        backend: ``None`` picks from the input (NumPy / CPU tensor -> ``"numba"``, JAX ->
            ``"jax"``, CUDA tensor -> the torch implementation on device); or force
            ``"torch"``, ``"numba"``, ``"jax"`` (``"triton"`` = torch on device).

    Returns:
        ``(au_ids, probs, boxes)``: ``int32[B, top_k]`` AU numbers with ``-1`` padding,
        ``float32[B, top_k]`` probabilities (0 padding), ``float32[B, top_k, 4]`` boxes (0
        padding); sorted by descending probability, ties to the smaller AU number; in the
        input's array family (torch: on the input's device).

    Raises:
        ValueError: wrong shapes/dtypes, ``A`` or ``R`` not matching the table, mixed
            families or devices, negative ``top_k`` or NaN ``threshold``.

    >>> import numpy as np
    >>> from tag_kernels.regions import IBUG68_REGIONS as T
    >>> p = np.zeros((1, len(T.aus)), np.float32)
    >>> p[0, T.aus.index(12)], p[0, T.aus.index(6)], p[0, T.aus.index(4)] = 0.9, 0.7, 0.2
    >>> boxes = np.zeros((1, len(T), 4), np.float32)
    >>> au, pr, bx = activated_list(p, boxes, T, top_k=3, threshold=0.5)
    >>> au.tolist(), [round(float(v), 2) for v in pr[0]]
    ([[12, 6, -1]], [0.9, 0.7, 0.0])
    """
    fam = common_family(_OP, au_prob=au_prob, region_boxes=region_boxes)
    _validate(au_prob, region_boxes, table, top_k, threshold)
    top_k = int(top_k)
    threshold = float(threshold)
    be = pick_backend(_OP, fam, au_prob, backend)
    if fam == "torch" and be not in ("torch", "triton"):
        # bf16 has no NumPy dtype; every backend computes in float32 anyway
        au_prob = au_prob.detach().to(torch.float32)
        region_boxes = region_boxes.detach().to(torch.float32)
    if be in ("torch", "triton"):
        dev = au_prob.device if fam == "torch" else "cpu"
        outs = activated_list_torch(
            to_torch(au_prob, torch.float32, dev),
            to_torch(region_boxes, torch.float32, dev),
            table,
            top_k,
            threshold,
        )
        return tuple(from_torch(o, fam, au_prob) for o in outs)  # type: ignore[return-value]
    if be == "numba":
        from ._numba import activated_list_numba

        outs_np = activated_list_numba(
            to_numpy(au_prob, np.float32),
            to_numpy(region_boxes, np.float32),
            table,
            top_k,
            threshold,
        )
        return tuple(from_numpy(o, fam, au_prob) for o in outs_np)  # type: ignore[return-value]
    import jax.numpy as jnp

    from ._jax import activated_list_jax

    outs_j = activated_list_jax(
        to_jax(au_prob, jnp.float32), to_jax(region_boxes, jnp.float32), table, top_k, threshold
    )
    return tuple(from_jax(o, fam, au_prob) for o in outs_j)  # type: ignore[return-value]


def _validate(au_prob: Any, region_boxes: Any, table: Any, top_k: Any, threshold: Any) -> None:
    if not isinstance(table, RegionTable):
        raise ValueError(f"{_OP}: table must be a RegionTable, got {type(table).__name__}")
    pshape = tuple(int(s) for s in au_prob.shape)
    bshape = tuple(int(s) for s in region_boxes.shape)
    A, R = len(table.aus), len(table)
    if len(pshape) != 2 or pshape[1] != A:
        raise ValueError(
            f"{_OP}: au_prob must be [B, {A}] (one column per AU of table {table.name!r}: "
            f"{list(table.aus)}), got shape {pshape}"
        )
    if len(bshape) != 3 or bshape[1] != R or bshape[2] != 4:
        raise ValueError(
            f"{_OP}: region_boxes must be [B, {R}, 4] (one row per region of table "
            f"{table.name!r}), got shape {bshape}"
        )
    if pshape[0] != bshape[0]:
        raise ValueError(
            f"{_OP}: au_prob and region_boxes must share B, got au_prob {pshape} and "
            f"region_boxes {bshape}"
        )
    for name, x in (("au_prob", au_prob), ("region_boxes", region_boxes)):
        dt = x.dtype
        ok = dt.is_floating_point if isinstance(x, torch.Tensor) else _np_float(dt)
        if not ok:
            raise ValueError(f"{_OP}: {name} must be a floating dtype, got {dt}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ValueError(f"{_OP}: top_k must be an int >= 0, got {top_k!r}")
    try:
        thr = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"{_OP}: threshold must be a float, got {threshold!r}") from None
    if math.isnan(thr):
        raise ValueError(f"{_OP}: threshold must not be NaN")


def _np_float(dt: Any) -> bool:
    try:
        return bool(np.issubdtype(np.dtype(dt), np.floating))
    except TypeError:
        return False
