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

The plain-torch :func:`activated_list_torch` is the specification; it is vectorised (no
per-row Python) and also serves CUDA tensors, on device and without host synchronisation.
:func:`activated_list_numba` serves NumPy arrays and CPU tensors; :func:`activated_list_jax`
serves JAX arrays. There is no Triton kernel for this op: ``backend="triton"`` runs the torch
implementation on the tensors' device.
"""

from __future__ import annotations

import math
from typing import Any

import numba
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

__all__ = [
    "activated_list",
    "activated_list_jax",
    "activated_list_numba",
    "activated_list_torch",
]

_OP = "activated_list"


# ----------------------------------------------------------------------------- reference
def activated_list_torch(
    au_prob: torch.Tensor,
    region_boxes: torch.Tensor,
    table: RegionTable,
    top_k: int,
    threshold: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain-torch reference: ``Tensor[B, A]``, ``Tensor[B, R, 4]`` ->
    ``(int32[B, top_k], float32[B, top_k], float32[B, top_k, 4])`` on the input's device.

    The slot of an activated column is the number of activated columns that outrank it
    (higher probability, or equal probability and a smaller column).
    """
    dev = au_prob.device
    _, _, _, aus, au_region = table.on_device("torch", dev)
    p = au_prob.to(torch.float32)
    B, A = p.shape
    act = p >= torch.tensor(threshold, dtype=torch.float32, device=dev)  # NaN -> False
    col = torch.arange(A, device=dev)
    pi, pj = p[:, :, None], p[:, None, :]  # i outranks j?
    outranks = act[:, :, None] & ((pi > pj) | ((pi == pj) & (col[:, None] < col[None, :])))
    rank = outranks.sum(dim=1)  # [B, A]
    slot = torch.where(act & (rank < top_k), rank, -1)
    hit = slot[:, :, None] == torch.arange(top_k, device=dev)  # [B, A, K]
    valid = hit.any(dim=1)  # [B, K]
    src = hit.to(torch.int32).argmax(dim=1)  # [B, K] column in slot k (0 if none)

    au_ids = torch.where(valid, aus[src], -1).to(torch.int32)
    probs = torch.where(valid, p.gather(1, src), 0.0)
    col_boxes = region_boxes.to(torch.float32)[:, au_region.long()]  # [B, A, 4]
    boxes = col_boxes.gather(1, src[:, :, None].expand(B, top_k, 4))
    boxes = torch.where(valid[:, :, None], boxes, 0.0)
    return au_ids, probs.contiguous(), boxes.contiguous()


# ----------------------------------------------------------------------------- numba
@numba.njit(parallel=True, cache=True)
def _activated_kernel(
    p, boxes, aus, au_region, top_k, thr, out_au, out_p, out_box
):  # pragma: no cover
    B, A = p.shape
    for b in numba.prange(B):
        n = 0  # slots filled, kept sorted by descending prob then ascending column
        for k in range(top_k):
            out_au[b, k] = -1
            out_p[b, k] = 0.0
            for c in range(4):
                out_box[b, k, c] = 0.0
        cols = np.empty(top_k, dtype=np.int64)
        for j in range(A):
            v = p[b, j]
            if not v >= thr:  # also rejects NaN
                continue
            # later columns lose ties, so insert after every slot with prob >= v
            pos = n
            while pos > 0 and out_p[b, pos - 1] < v:
                pos -= 1
            if pos >= top_k:
                continue
            last = min(n, top_k - 1)
            for s in range(last, pos, -1):
                out_p[b, s] = out_p[b, s - 1]
                cols[s] = cols[s - 1]
            out_p[b, pos] = v
            cols[pos] = j
            n = min(n + 1, top_k)
        for s in range(n):
            j = cols[s]
            out_au[b, s] = aus[j]
            r = au_region[j]
            for c in range(4):
                out_box[b, s, c] = boxes[b, r, c]


def activated_list_numba(
    au_prob: np.ndarray,
    region_boxes: np.ndarray,
    table: RegionTable,
    top_k: int,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numba backend: ``float32[B, A]``, ``float32[B, R, 4]`` (C-contiguous) -> NumPy outputs."""
    pk = table.packed
    B = au_prob.shape[0]
    out_au = np.empty((B, top_k), dtype=np.int32)
    out_p = np.empty((B, top_k), dtype=np.float32)
    out_box = np.empty((B, top_k, 4), dtype=np.float32)
    if B and top_k:
        _activated_kernel(
            au_prob,
            region_boxes,
            pk.aus,
            pk.au_region,
            top_k,
            np.float32(threshold),
            out_au,
            out_p,
            out_box,
        )
    return out_au, out_p, out_box


# ----------------------------------------------------------------------------- jax
_jax_cache: dict[int, Any] = {}


def _jax_fn(top_k: int) -> Any:
    fn = _jax_cache.get(top_k)
    if fn is not None:
        return fn
    import jax
    import jax.numpy as jnp

    def one_row(p: Any, boxes: Any, thr: Any, aus: Any, au_region: Any) -> Any:
        A = p.shape[0]
        act = p >= thr
        col = jnp.arange(A)
        outranks = act[:, None] & (
            (p[:, None] > p[None, :]) | ((p[:, None] == p[None, :]) & (col[:, None] < col[None, :]))
        )
        rank = outranks.sum(axis=0)
        slot = jnp.where(act & (rank < top_k), rank, -1)
        hit = slot[:, None] == jnp.arange(top_k)[None, :]  # [A, K]
        valid = hit.any(axis=0)
        src = jnp.argmax(hit, axis=0)
        au_ids = jnp.where(valid, aus[src], -1).astype(jnp.int32)
        probs = jnp.where(valid, p[src], 0.0).astype(jnp.float32)
        bx = jnp.where(valid[:, None], boxes[au_region[src]], 0.0).astype(jnp.float32)
        return au_ids, probs, bx

    @jax.jit
    def run(p: Any, boxes: Any, thr: Any, aus: Any, au_region: Any) -> Any:
        return jax.vmap(one_row, in_axes=(0, 0, None, None, None))(p, boxes, thr, aus, au_region)

    _jax_cache[top_k] = run
    return run


def activated_list_jax(
    au_prob: Any, region_boxes: Any, table: RegionTable, top_k: int, threshold: float
) -> tuple[Any, Any, Any]:
    """JAX backend (``jit`` + ``vmap``): ``float32[B, A]``, ``float32[B, R, 4]`` -> JAX outputs."""
    import jax.numpy as jnp

    _, _, _, aus, au_region = table.on_device("jax")
    fn = _jax_fn(int(top_k))
    return fn(au_prob, region_boxes, jnp.float32(threshold), aus, au_region)


# ----------------------------------------------------------------------------- public
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
        outs_np = activated_list_numba(
            to_numpy(au_prob, np.float32),
            to_numpy(region_boxes, np.float32),
            table,
            top_k,
            threshold,
        )
        return tuple(from_numpy(o, fam, au_prob) for o in outs_np)  # type: ignore[return-value]
    import jax.numpy as jnp

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
