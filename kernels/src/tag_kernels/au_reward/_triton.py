"""Triton backend of the AU-grounding reward: one fused launch, one program per row.

Layers: the ``@triton.jit`` kernel, its launcher. Each program loads its row's predicted and
detector slots, builds the ``[BLOCK_K, BLOCK_M]`` candidate-IoU tile in registers (the IoU helper
is shared with :mod:`tag_kernels.box_iou._triton`), then runs the greedy matching as a runtime
loop of ``min(|P|, |D|)`` steps: a flattened ``argmax`` with ``tie_break_left=True`` (smallest
``k * BLOCK_M + m`` first: smaller ``k``, then smaller ``m``), after which the chosen row and column
are knocked out. There is no host synchronisation inside; results stay on the device.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..box_iou._triton import iou_tile

__all__ = ["MAX_SLOTS", "aot_compile_specs", "au_reward_triton"]

#: Largest K or M the fused kernel takes (the tile lives in registers).
MAX_SLOTS = 128


@triton.jit
def _au_reward_kernel(
    pb_ptr, pa_ptr, rb_ptr, ra_ptr, rp_ptr,
    reward_ptr, precision_ptr, recall_ptr, matched_ptr,
    K, M, beta2, empty_value,
    CLASS_AWARE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    ks = tl.arange(0, BLOCK_K)
    ms = tl.arange(0, BLOCK_M)
    kmask = ks < K
    mmask = ms < M

    pa = tl.load(pa_ptr + row * K + ks, mask=kmask, other=-1)
    ra = tl.load(ra_ptr + row * M + ms, mask=mmask, other=-1)
    if CLASS_AWARE:  # AU 0 (a box that names no AU) is an inspection, not a prediction
        p_present = pa > 0
    else:
        p_present = pa >= 0
    d_present = ra >= 0
    n_p = tl.sum(p_present.to(tl.int32), axis=0)
    n_d = tl.sum(d_present.to(tl.int32), axis=0)

    pbase = pb_ptr + row * K * 4 + ks * 4
    rbase = rb_ptr + row * M * 4 + ms * 4
    ax1 = tl.load(pbase + 0, mask=kmask, other=0.0).to(tl.float32)[:, None]
    ay1 = tl.load(pbase + 1, mask=kmask, other=0.0).to(tl.float32)[:, None]
    ax2 = tl.load(pbase + 2, mask=kmask, other=0.0).to(tl.float32)[:, None]
    ay2 = tl.load(pbase + 3, mask=kmask, other=0.0).to(tl.float32)[:, None]
    bx1 = tl.load(rbase + 0, mask=mmask, other=0.0).to(tl.float32)[None, :]
    by1 = tl.load(rbase + 1, mask=mmask, other=0.0).to(tl.float32)[None, :]
    bx2 = tl.load(rbase + 2, mask=mmask, other=0.0).to(tl.float32)[None, :]
    by2 = tl.load(rbase + 3, mask=mmask, other=0.0).to(tl.float32)[None, :]
    iou = iou_tile(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2)

    cand = p_present[:, None] & d_present[None, :] & (iou > 0.0)
    if CLASS_AWARE:
        cand = cand & (pa[:, None] == ra[None, :])
    score = tl.where(cand, iou, -1.0)

    prob = tl.load(rp_ptr + row * M + ms, mask=mmask, other=0.0).to(tl.float32)
    w = tl.where(d_present & ((prob - prob) == 0) & (prob > 0.0), prob, 0.0)
    wmax = tl.max(w, axis=0)
    w = tl.where(wmax > 0.0, w / tl.where(wmax > 0.0, wmax, 1.0), d_present.to(tl.float32))
    sum_w = tl.sum(w, axis=0)

    s_iou = tl.zeros((), dtype=tl.float32)
    s_wiou = tl.zeros((), dtype=tl.float32)
    n_matched = tl.zeros((), dtype=tl.int32)
    n_iter = tl.minimum(n_p, n_d)
    for _ in range(0, n_iter):
        flat = tl.reshape(score, (BLOCK_K * BLOCK_M,))
        best = tl.max(flat, axis=0)
        idx = tl.argmax(flat, axis=0, tie_break_left=True)
        take = best > 0.0
        k = idx // BLOCK_M
        m = idx % BLOCK_M
        wm = tl.sum(tl.where(ms == m, w, 0.0), axis=0)
        s_iou += tl.where(take, best, 0.0)
        s_wiou += tl.where(take, best * wm, 0.0)
        n_matched += take.to(tl.int32)
        gone = (ks[:, None] == k) | (ms[None, :] == m)
        score = tl.where(gone, -1.0, score)

    prec = s_iou / tl.maximum(n_p, 1).to(tl.float32)
    rec = s_wiou / tl.where(sum_w > 0.0, sum_w, 1.0)
    den = beta2 * prec + rec
    rew = tl.where(den > 0.0, (1.0 + beta2) * prec * rec / tl.where(den > 0.0, den, 1.0), 0.0)
    both_empty = (n_p == 0) & (n_d == 0)
    one_empty = (n_p == 0) != (n_d == 0)
    rew = tl.where(both_empty, empty_value, tl.where(one_empty, 0.0, rew))
    prec = tl.where(both_empty, empty_value, tl.where(one_empty, 0.0, prec))
    rec = tl.where(both_empty, empty_value, tl.where(one_empty, 0.0, rec))
    tl.store(reward_ptr + row, tl.minimum(tl.maximum(rew, 0.0), 1.0))
    tl.store(precision_ptr + row, tl.minimum(tl.maximum(prec, 0.0), 1.0))
    tl.store(recall_ptr + row, tl.minimum(tl.maximum(rec, 0.0), 1.0))
    tl.store(matched_ptr + row, n_matched)


def au_reward_triton(
    pred_boxes: torch.Tensor,
    pred_au: torch.Tensor,
    ref_boxes: torch.Tensor,
    ref_au: torch.Tensor,
    ref_prob: torch.Tensor,
    beta: float,
    class_aware: bool,
    empty_value: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launcher: contiguous ``[B,K,4]`` boxes (any float dtype), int32 ids, float probs on one
    device -> ``(reward, precision, recall, matched)``, each ``[B]`` on that device."""
    B, K = pred_au.shape
    M = ref_au.shape[1]
    if max(K, M) > MAX_SLOTS:
        raise ValueError(
            f"au_grounding_reward: the Triton kernel takes at most {MAX_SLOTS} slots per row, "
            f"got K={K}, M={M}; pass backend='torch' for larger rows"
        )
    dev = pred_boxes.device
    reward = torch.empty(B, dtype=torch.float32, device=dev)
    precision = torch.empty_like(reward)
    recall = torch.empty_like(reward)
    matched = torch.empty(B, dtype=torch.int32, device=dev)
    if B == 0:
        return reward, precision, recall, matched
    bk = max(16, triton.next_power_of_2(max(K, 1)))
    bm = max(16, triton.next_power_of_2(max(M, 1)))
    # About 8 tile elements per thread: reductions for K = M = 16 stay inside one warp.
    warps = min(8, max(1, (bk * bm) // 256))
    _au_reward_kernel[(B,)](
        pred_boxes, pred_au, ref_boxes, ref_au, ref_prob,
        reward, precision, recall, matched,
        K, M, float(beta) ** 2, float(empty_value),
        CLASS_AWARE=bool(class_aware), BLOCK_K=bk, BLOCK_M=bm,
        num_warps=warps, enable_fp_fusion=False,
    )  # fmt: skip
    return reward, precision, recall, matched


def aot_compile_specs() -> list[tuple[object, dict[str, str], dict[str, object]]]:
    """``(kernel, signature, constexprs)`` triples for ahead-of-time compilation tests."""
    sig = {
        "pb_ptr": "*fp32", "pa_ptr": "*i32", "rb_ptr": "*fp32", "ra_ptr": "*i32", "rp_ptr": "*fp32",
        "reward_ptr": "*fp32", "precision_ptr": "*fp32", "recall_ptr": "*fp32", "matched_ptr": "*i32",
        "K": "i32", "M": "i32", "beta2": "fp32", "empty_value": "fp32",
        "CLASS_AWARE": "constexpr", "BLOCK_K": "constexpr", "BLOCK_M": "constexpr",
    }  # fmt: skip
    return [
        (_au_reward_kernel, sig, {"CLASS_AWARE": True, "BLOCK_K": 16, "BLOCK_M": 16}),
        (_au_reward_kernel, sig, {"CLASS_AWARE": False, "BLOCK_K": 64, "BLOCK_M": 64}),
        (_au_reward_kernel, {**sig, "pb_ptr": "*bf16", "rb_ptr": "*bf16", "rp_ptr": "*bf16"},
         {"CLASS_AWARE": True, "BLOCK_K": 32, "BLOCK_M": 16}),
    ]  # fmt: skip
