"""JAX backend of batched box IoU (``jit``; the pairwise tile is a broadcast)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["box_iou_jax", "iou_pairwise"]


def _valid(box: jax.Array) -> jax.Array:
    finite = jnp.all(jnp.isfinite(box), axis=-1)
    return finite & (box[..., 2] > box[..., 0]) & (box[..., 3] > box[..., 1])


def iou_pairwise(a: jax.Array, b: jax.Array) -> jax.Array:
    """``float32[K, 4], float32[M, 4] -> float32[K, M]``, the reference formula."""
    ax1, ay1, ax2, ay2 = (a[:, i, None] for i in range(4))
    bx1, by1, bx2, by2 = (b[None, :, i] for i in range(4))
    iw = jnp.maximum(jnp.minimum(ax2, bx2) - jnp.maximum(ax1, bx1), 0.0)
    ih = jnp.maximum(jnp.minimum(ay2, by2) - jnp.maximum(ay1, by1), 0.0)
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    ok = _valid(a)[:, None] & _valid(b)[None, :] & (union > 0)
    iou = inter / jnp.where(ok, union, 1.0)
    ok = ok & jnp.isfinite(iou)
    return jnp.clip(jnp.where(ok, iou, 0.0), 0.0, 1.0).astype(jnp.float32)


@jax.jit
def box_iou_jax(a: jax.Array, b: jax.Array) -> jax.Array:
    """``float32[B, K, 4], float32[B, M, 4] -> float32[B, K, M]``."""
    return jax.vmap(iou_pairwise)(a, b)
