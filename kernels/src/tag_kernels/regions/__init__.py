"""``landmarks_to_regions``: one box per face region from facial landmarks.

Layout (one algorithm, several backends): ``_table.py`` holds :class:`Region`,
:class:`RegionTable` and :data:`IBUG68_REGIONS`; ``_reference.py`` the plain-torch
specification; ``_numba.py``, ``_triton.py`` and ``_jax.py`` the backends.
"""

from __future__ import annotations

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
from ._reference import landmarks_to_regions_torch
from ._table import IBUG68_REGIONS, PackedRegionTable, Region, RegionTable

__all__ = [
    "IBUG68_REGIONS",
    "PackedRegionTable",
    "Region",
    "RegionTable",
    "landmarks_to_regions",
    "landmarks_to_regions_torch",
]

_OP = "landmarks_to_regions"


def _is_real(x: Any) -> bool:
    dt = x.dtype
    if isinstance(x, torch.Tensor):
        return not dt.is_complex and dt != torch.bool
    try:
        nd = np.dtype(dt)
    except TypeError:
        return False
    return bool(np.issubdtype(nd, np.floating) or np.issubdtype(nd, np.integer))


def _validate(landmarks: Any, image_size: Any, table: RegionTable) -> tuple[int, int]:
    if not isinstance(table, RegionTable):
        raise ValueError(f"{_OP}: table must be a RegionTable, got {type(table).__name__}")
    lshape = tuple(int(s) for s in landmarks.shape)
    sshape = tuple(int(s) for s in image_size.shape)
    if len(lshape) != 3 or lshape[2] != 2:
        raise ValueError(f"{_OP}: landmarks must be [B, L, 2], got shape {lshape}")
    if len(sshape) != 2 or sshape[1] != 2:
        raise ValueError(f"{_OP}: image_size must be [B, 2] as (w, h), got shape {sshape}")
    if sshape[0] != lshape[0]:
        raise ValueError(
            f"{_OP}: landmarks and image_size must share B, got landmarks {lshape} and "
            f"image_size {sshape}"
        )
    need = table.packed.min_landmarks
    if lshape[1] < need:
        raise ValueError(
            f"{_OP}: table {table.name!r} reads landmark index {need - 1}, so landmarks needs "
            f"L >= {need}; got shape {lshape}"
        )
    dt = landmarks.dtype
    is_float = (
        dt.is_floating_point
        if isinstance(landmarks, torch.Tensor)
        else (_is_real(landmarks) and np.issubdtype(np.dtype(dt), np.floating))
    )
    if not is_float:
        raise ValueError(f"{_OP}: landmarks must be a floating dtype, got {dt}")
    if not _is_real(image_size):
        raise ValueError(
            f"{_OP}: image_size must be a real (int or float) dtype, got {image_size.dtype}"
        )
    return lshape[0], lshape[1]


def landmarks_to_regions(
    landmarks: Any,
    image_size: Any,
    table: RegionTable = IBUG68_REGIONS,
    *,
    backend: str | None = None,
) -> Any:
    """Boxes of every region of ``table`` for a batch of faces.

    Args:
        landmarks: ``[B, L, 2]`` (x, y) points in image pixels (floating dtype): a torch
            tensor, NumPy array or JAX array. NaN/inf points are allowed (degenerate).
        image_size: ``[B, 2]`` as (w, h), int or float, same family (and device) as
            ``landmarks``.
        table: the region recipes (default :data:`IBUG68_REGIONS`, which needs ``L >= 68``).
        backend: ``None`` picks from the input (CUDA tensor -> ``"triton"``, CPU tensor or
            NumPy -> ``"numba"``, JAX -> ``"jax"``); or force ``"torch"`` (the reference),
            ``"numba"``, ``"triton"`` or ``"jax"``.

    Returns:
        ``[B, R, 4]`` float32 xyxy boxes, ``R = len(table)``, row ``r`` = ``table.regions[r]``
        (``table.region_of(au)`` gives an AU's row), clamped to ``[0, w] x [0, h]``; in the
        input's family (torch: on the input's device). Degenerate faces or regions (NaN
        landmarks, zero or non-finite eye distance, bad image size) give ``(0, 0, 0, 0)``.

    Raises:
        ValueError: wrong shapes or dtypes, ``L`` too small for the table, mixed families or
            devices, or an unknown backend.

    >>> import numpy as np
    >>> t = RegionTable((Region("pair", (1,), (0, 1), pad_x=0.5),), unit_points=(0, 1))
    >>> landmarks_to_regions(np.array([[[10.0, 5.0], [14.0, 5.0]]]), np.array([[20, 20]]), t)
    array([[[ 8.,  5., 16.,  5.]]], dtype=float32)
    """
    fam = common_family(_OP, landmarks=landmarks, image_size=image_size)
    _validate(landmarks, image_size, table)
    be = pick_backend(_OP, fam, landmarks, backend)
    like = landmarks

    if be == "torch":
        dev = landmarks.device if fam == "torch" else "cpu"
        lm = landmarks if fam == "torch" else to_torch(landmarks, torch.float32)
        out = landmarks_to_regions_torch(lm, to_torch(image_size, torch.float32, dev), table)
        return from_torch(out, fam, like)
    if fam == "torch" and be != "triton":
        # bf16 has no NumPy dtype; float32 is what every CPU backend computes in anyway
        landmarks = landmarks.detach().to(torch.float32)
        image_size = image_size.detach().to(torch.float32)
    if be == "numba":
        from ._numba import landmarks_to_regions_numba

        lm_np = to_numpy(landmarks, np.float32)
        out_np = landmarks_to_regions_numba(lm_np, to_numpy(image_size, np.float32), table)
        return from_numpy(out_np, fam, like)
    if be == "triton":
        from ._triton import landmarks_to_regions_triton

        if fam == "torch":
            dev = landmarks.device
            lm_t = landmarks.detach()  # any float dtype: the kernel upcasts after tl.load
        else:
            dev = torch.device("cpu")
            lm_t = to_torch(landmarks, torch.float32)
        out = landmarks_to_regions_triton(lm_t, to_torch(image_size, torch.float32, dev), table)
        return from_torch(out, fam, like)
    # jax
    import jax.numpy as jnp

    from ._jax import landmarks_to_regions_jax

    out_j = landmarks_to_regions_jax(
        to_jax(landmarks, jnp.float32), to_jax(image_size, jnp.float32), table
    )
    return from_jax(out_j, fam, like)
