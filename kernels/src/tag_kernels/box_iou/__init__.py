"""Batched pairwise box IoU, ``xyxy``.

``batched_box_iou(a, b)`` is torchvision's ``box_iou`` with a batch dimension and a defined
answer for bad boxes: IoU is 0 where the union is 0 or either box is degenerate (a non-finite
coordinate, ``x2 <= x1`` or ``y2 <= y1``). See :mod:`tag_kernels.box_iou._reference` for the
exact float32 formula every backend follows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import _dispatch as d
from ._reference import box_iou_reference

__all__ = ["batched_box_iou", "elementwise_box_iou"]

_OP = "batched_box_iou"


def batched_box_iou(a: Any, b: Any, *, backend: str | None = None) -> Any:
    """Pairwise IoU of two batches of boxes.

    Args:
        a: ``Tensor[B, K, 4]`` (or NumPy / JAX array) boxes, ``xyxy``, floating point.
        b: ``Tensor[B, M, 4]`` boxes, same family and device as ``a``.
        backend: ``None`` picks from the input (CUDA tensor: Triton; CPU tensor or NumPy:
            Numba; JAX: JAX); or one of ``"torch"``, ``"numba"``, ``"triton"``, ``"jax"``.

    Returns:
        ``[B, K, M]`` float32 IoU in ``[0, 1]``, in the input's array family and device.

    Example:
        >>> import numpy as np
        >>> a = np.array([[[0, 0, 2, 2]]], dtype=np.float32)
        >>> b = np.array([[[1, 0, 3, 2], [5, 5, 4, 6]]], dtype=np.float32)
        >>> batched_box_iou(a, b).astype(np.float64).round(4).tolist()
        [[[0.3333, 0.0]]]
    """
    fam = d.common_family(_OP, a=a, b=b)
    B, _, _ = d.check_shape(_OP, "a", a, 3, 4)
    B2, _, _ = d.check_shape(_OP, "b", b, 3, 4)
    if B != B2:
        raise ValueError(
            f"{_OP}: a and b must share the batch size, got a {tuple(a.shape)} and b {tuple(b.shape)}"
        )
    d.check_float(_OP, "a", a)
    d.check_float(_OP, "b", b)
    be = d.pick_backend(_OP, fam, a, backend)
    if be == "numba":
        from ._numba import box_iou_numba

        out = box_iou_numba(d.to_numpy(a, np.float32), d.to_numpy(b, np.float32))
        return d.from_numpy(out, fam, a)
    if be == "jax":
        import jax.numpy as jnp

        from ._jax import box_iou_jax

        out = box_iou_jax(d.to_jax(a, jnp.float32), d.to_jax(b, jnp.float32))
        return d.from_jax(out, fam, a)
    if be == "triton":
        from ._triton import box_iou_triton

        dev = a.device if fam == "torch" else "cpu"
        out = box_iou_triton(
            d.to_torch(a, a.dtype if fam == "torch" else torch.float32, dev),
            d.to_torch(b, b.dtype if fam == "torch" else torch.float32, dev),
        )
        return d.from_torch(out, fam, a)
    dev = a.device if fam == "torch" else "cpu"
    out = box_iou_reference(d.to_torch(a, torch.float32, dev), d.to_torch(b, torch.float32, dev))
    return d.from_torch(out, fam, a)


def elementwise_box_iou(a: Any, b: Any, *, backend: str | None = None) -> Any:
    """IoU of ``a[..., i]`` with ``b[..., i]``, box by box (not pairwise).

    The same op, rule and backends as :func:`batched_box_iou`, read as a batch of ``N`` rows
    with one box each: 0 for a degenerate box (a non-finite coordinate, ``x2 <= x1`` or
    ``y2 <= y1``) or an empty union.

    Args:
        a: ``Tensor[..., 4]`` (or NumPy / JAX array) boxes, ``xyxy``, floating point.
        b: ``Tensor[..., 4]`` boxes, same shape, family and device as ``a``.
        backend: as for :func:`batched_box_iou`.

    Returns:
        ``[...]`` float32 IoU in ``[0, 1]`` (the leading shape of ``a``), in the input's array
        family and device.

    Example:
        >>> import numpy as np
        >>> a = np.array([[0, 0, 2, 2], [0, 0, 1, 1]], dtype=np.float32)
        >>> b = np.array([[1, 0, 3, 2], [0, 0, 1, 1]], dtype=np.float32)
        >>> elementwise_box_iou(a, b).astype(np.float64).round(4).tolist()
        [0.3333, 1.0]
    """
    if tuple(a.shape) != tuple(b.shape) or (len(a.shape) and a.shape[-1] != 4) or not len(a.shape):
        raise ValueError(
            f"elementwise_box_iou: a and b must share one shape [..., 4], got "
            f"a {tuple(a.shape)} and b {tuple(b.shape)}"
        )
    lead = tuple(a.shape[:-1])
    out = batched_box_iou(a.reshape(-1, 1, 4), b.reshape(-1, 1, 4), backend=backend)
    return out.reshape(lead)
