"""Plain-torch AU-grounding reward: the written specification.

For one row (one completion) with predicted pairs ``(pred_au[k], pred_boxes[k])`` and detector
entries ``(ref_au[m], ref_prob[m], ref_boxes[m])``:

1. Present references D are the slots with ``ref_au >= 0``. Present predictions P are the slots
   with ``pred_au >= 0`` when matching is class-agnostic, and with ``pred_au > 0`` when it is
   class-aware: AU ``0`` marks a box that names no AU, an *inspection* ("Inspect the whole face
   → at rest → <bbox>"), not a claim about an AU, so it neither costs precision nor counts as a
   prediction (a trace with only inspection boxes, on a face where the detector sees nothing,
   scores ``empty_value``). Naming an AU that the detector does not see still costs precision.
   A degenerate box still counts as present; its IoU is 0.
2. Candidate pairs are ``(k, m)`` with ``k`` in P, ``m`` in D, ``IoU > 0`` and, when
   ``class_aware``, ``pred_au[k] == ref_au[m]``.
3. Greedy one-to-one matching by descending IoU: take the best remaining candidate, remove its
   row and column, repeat. Ties go to the smaller ``k``, then the smaller ``m``.
4. ``precision = sum(matched IoU) / |P|``.
5. ``recall = sum(w[m] * IoU[m]) / sum(w)`` over D, with ``w = max(prob, 0)`` (a non-finite
   probability weighs 0). Weights are divided by their maximum first (recall is scale free, and
   this keeps float32 sums finite); if every weight is 0, all of D weigh 1.
6. ``reward = (1 + beta^2) * P * R / (beta^2 * P + R)``, or 0 when both are 0.
7. Empty rows: P and D both empty give ``reward = precision = recall = empty_value``; exactly
   one of them empty gives 0 for all three.

``matched`` is the number of matched pairs. Rewards, precisions and recalls are finite and in
``[0, 1]`` whatever the input. Arithmetic is float32; IoU follows
:mod:`tag_kernels.box_iou._reference` exactly.
"""

from __future__ import annotations

import torch
from einops import rearrange

from ..box_iou._reference import box_iou_reference

__all__ = ["au_grounding_reward_reference"]


def au_grounding_reward_reference(
    pred_boxes: torch.Tensor,
    pred_au: torch.Tensor,
    ref_boxes: torch.Tensor,
    ref_au: torch.Tensor,
    ref_prob: torch.Tensor,
    *,
    beta: float = 1.0,
    class_aware: bool = True,
    empty_value: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched reference, vectorised over rows.

    Args:
        pred_boxes: ``Tensor[B, K, 4]`` predicted boxes, ``xyxy`` image pixels.
        pred_au: ``Tensor[B, K]`` integer AU ids, ``-1`` = padding.
        ref_boxes: ``Tensor[B, M, 4]`` detector boxes.
        ref_au: ``Tensor[B, M]`` integer AU ids, ``-1`` = padding.
        ref_prob: ``Tensor[B, M]`` detector probabilities (recall weights).

    Returns:
        ``(reward, precision, recall, matched)``: three ``FloatTensor[B]`` and ``IntTensor[B]``.
    """
    B, K = pred_au.shape
    M = ref_au.shape[1]
    dev = pred_boxes.device
    f32 = torch.float32
    pred_au = pred_au.to(torch.int64)
    ref_au = ref_au.to(torch.int64)
    p_present = (pred_au > 0) if class_aware else (pred_au >= 0)  # [B, K]
    d_present = ref_au >= 0  # [B, M]

    # Steps 1-2: candidate IoUs; everything else scores -1 and is never taken.
    iou = box_iou_reference(pred_boxes, ref_boxes)  # [B, K, M]

    def rows(x: torch.Tensor) -> torch.Tensor:  # [B, K] -> [B, K, 1]
        return rearrange(x, "b k -> b k 1")

    def cols(x: torch.Tensor) -> torch.Tensor:  # [B, M] -> [B, 1, M]
        return rearrange(x, "b m -> b 1 m")

    cand = rows(p_present) & cols(d_present) & (iou > 0)
    if class_aware:
        cand = cand & (rows(pred_au) == cols(ref_au))
    score = torch.where(cand, iou, torch.full((), -1.0, dtype=f32, device=dev))

    # Step 5's weights.
    prob = ref_prob.to(f32)
    w = torch.where(
        d_present & torch.isfinite(prob) & (prob > 0), prob, torch.zeros((), dtype=f32, device=dev)
    )
    wmax = w.amax(dim=1, keepdim=True) if M else torch.zeros((B, 1), dtype=f32, device=dev)
    w = torch.where(wmax > 0, w / torch.where(wmax > 0, wmax, 1.0), d_present.to(f32))

    # Step 3: greedy matching. torch.argmax returns the first maximum, i.e. the smallest
    # flattened index k * M + m: ties go to the smaller k, then the smaller m.
    sum_iou = torch.zeros(B, dtype=f32, device=dev)
    sum_wiou = torch.zeros(B, dtype=f32, device=dev)
    matched = torch.zeros(B, dtype=torch.int32, device=dev)
    ks = torch.arange(K, device=dev)
    ms = torch.arange(M, device=dev)
    for _ in range(min(K, M)):
        flat = rearrange(score, "b k m -> b (k m)")
        idx = flat.argmax(dim=1)
        best = flat.gather(1, idx[:, None])[:, 0]
        take = best > 0
        if not bool(take.any()):
            break
        k, m = idx // M, idx % M
        zero = torch.zeros((), dtype=f32, device=dev)
        sum_iou = sum_iou + torch.where(take, best, zero)
        sum_wiou = sum_wiou + torch.where(take, best * w.gather(1, m[:, None])[:, 0], zero)
        matched = matched + take.to(torch.int32)
        row_gone = (ks[None, :] == k[:, None]) & take[:, None]  # [B, K]
        col_gone = (ms[None, :] == m[:, None]) & take[:, None]  # [B, M]
        score = score.masked_fill(rows(row_gone) | cols(col_gone), -1.0)

    # Steps 4-7.
    n_p = p_present.sum(dim=1)
    n_d = d_present.sum(dim=1)
    precision = sum_iou / n_p.clamp_min(1).to(f32)
    sum_w = w.sum(dim=1)
    recall = sum_wiou / torch.where(sum_w > 0, sum_w, 1.0)
    b2 = float(beta) ** 2
    denom = b2 * precision + recall
    reward = torch.where(
        denom > 0, (1.0 + b2) * precision * recall / torch.where(denom > 0, denom, 1.0), 0.0
    )

    both_empty = (n_p == 0) & (n_d == 0)
    one_empty = (n_p == 0) ^ (n_d == 0)
    ev = torch.full((), float(empty_value), dtype=f32, device=dev)
    zero = torch.zeros((), dtype=f32, device=dev)
    out = []
    for x in (reward, precision, recall):
        x = torch.where(both_empty, ev, torch.where(one_empty, zero, x))
        out.append(x.clamp(0.0, 1.0).to(f32))
    return out[0], out[1], out[2], matched
