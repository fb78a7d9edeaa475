"""JAX backend of the AU-grounding reward (``jit`` + ``vmap`` over rows).

The greedy matching is a ``lax.fori_loop`` of ``min(K, M)`` steps of flattened ``argmax``
(``jnp.argmax`` returns the first maximum: smaller ``k``, then smaller ``m``), masked once no
candidate is left.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from ..box_iou._jax import iou_pairwise

__all__ = ["au_reward_jax"]


def _row(pb, pa, rb, ra, rp, beta2, empty_value, class_aware):
    K, M = pa.shape[0], ra.shape[0]
    f32 = jnp.float32
    # class-aware: AU 0 (a box that names no AU) is an inspection, not a prediction
    p_present = pa > 0 if class_aware else pa >= 0
    d_present = ra >= 0
    n_p = jnp.sum(p_present.astype(jnp.int32))
    n_d = jnp.sum(d_present.astype(jnp.int32))
    iou = iou_pairwise(pb, rb)
    cand = p_present[:, None] & d_present[None, :] & (iou > 0)
    if class_aware:
        cand = cand & (pa[:, None] == ra[None, :])
    score = jnp.where(cand, iou, f32(-1.0)).reshape(K * M)

    w = jnp.where(d_present & jnp.isfinite(rp) & (rp > 0), rp, f32(0.0))
    wmax = jnp.max(w) if M else f32(0.0)
    w = jnp.where(wmax > 0, w / jnp.where(wmax > 0, wmax, f32(1.0)), d_present.astype(f32))
    sum_w = jnp.sum(w)
    kk = jnp.arange(K * M) // max(M, 1)
    mm = jnp.arange(K * M) % max(M, 1)

    def body(_, carry):
        score, s_iou, s_wiou, n = carry
        idx = jnp.argmax(score)
        best = score[idx]
        take = best > 0
        k, m = idx // M, idx % M
        s_iou = s_iou + jnp.where(take, best, f32(0.0))
        s_wiou = s_wiou + jnp.where(take, best * w[m], f32(0.0))
        n = n + take.astype(jnp.int32)
        score = jnp.where((kk == k) | (mm == m), f32(-1.0), score)
        return score, s_iou, s_wiou, n

    init = (score, f32(0.0), f32(0.0), jnp.int32(0))
    if K and M:
        _, s_iou, s_wiou, n = jax.lax.fori_loop(0, min(K, M), body, init)
    else:
        _, s_iou, s_wiou, n = init
    prec = s_iou / jnp.maximum(n_p, 1).astype(f32)
    rec = s_wiou / jnp.where(sum_w > 0, sum_w, f32(1.0))
    den = beta2 * prec + rec
    rew = jnp.where(
        den > 0, (1.0 + beta2) * prec * rec / jnp.where(den > 0, den, f32(1.0)), f32(0.0)
    )
    both = (n_p == 0) & (n_d == 0)
    one = (n_p == 0) != (n_d == 0)

    def fix(x):
        x = jnp.where(both, empty_value, jnp.where(one, f32(0.0), x))
        return jnp.clip(x, 0.0, 1.0).astype(f32)

    return fix(rew), fix(prec), fix(rec), n


@partial(jax.jit, static_argnames=("class_aware",))
def au_reward_jax(
    pred_boxes, pred_au, ref_boxes, ref_au, ref_prob, beta2, empty_value, *, class_aware
):
    """``float32[B,K,4], int32[B,K], float32[B,M,4], int32[B,M], float32[B,M]``
    -> ``(reward, precision, recall, matched)``, each ``[B]``."""
    beta2 = jnp.float32(beta2)
    empty_value = jnp.float32(empty_value)
    fn = partial(_row, beta2=beta2, empty_value=empty_value, class_aware=class_aware)
    return jax.vmap(fn)(pred_boxes, pred_au, ref_boxes, ref_au, ref_prob)
