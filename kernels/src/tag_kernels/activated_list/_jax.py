"""JAX backend of ``activated_list`` (``jit`` + ``vmap``, one compiled function per ``top_k``)."""

from __future__ import annotations

from typing import Any

from ..regions._table import RegionTable

__all__ = ["activated_list_jax"]

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
