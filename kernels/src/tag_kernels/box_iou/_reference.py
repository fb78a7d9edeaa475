"""Plain-torch batched box IoU: the specification every backend is tested against.

For boxes ``a = (ax1, ay1, ax2, ay2)`` and ``b`` in ``xyxy``, all arithmetic in float32::

    valid(a)  = all four coordinates finite and ax2 > ax1 and ay2 > ay1
    iw        = max(min(ax2, bx2) - max(ax1, bx1), 0)
    ih        = max(min(ay2, by2) - max(ay1, by1), 0)
    inter     = iw * ih
    union     = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    iou       = inter / union   if valid(a) and valid(b) and union > 0 and the quotient is finite
              = 0               otherwise

The result is clamped to ``[0, 1]``. Every backend evaluates exactly these float32 operations in
this order (no fused multiply-add), so backends agree to the last bit on ordinary inputs.
"""

from __future__ import annotations

import torch

__all__ = ["box_iou_reference", "box_valid_reference"]


def box_valid_reference(boxes: torch.Tensor) -> torch.Tensor:
    """``Tensor[..., 4] -> BoolTensor[...]``: finite and with positive width and height."""
    finite = torch.isfinite(boxes).all(dim=-1)
    return finite & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])


def box_iou_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU within each batch row.

    Args:
        a: ``Tensor[B, K, 4]`` boxes, ``xyxy``.
        b: ``Tensor[B, M, 4]`` boxes, ``xyxy``.

    Returns:
        ``Tensor[B, K, M]`` float32, ``out[i, k, m] = IoU(a[i, k], b[i, m])``.
    """
    a = a.to(torch.float32)
    b = b.to(torch.float32)
    ax1, ay1, ax2, ay2 = (a[..., i, None] for i in range(4))  # [B, K, 1]
    bx1, by1, bx2, by2 = (b[..., None, :, i] for i in range(4))  # [B, 1, M]
    iw = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp_min(0)
    ih = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp_min(0)
    inter = iw * ih
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    union = area_a + area_b - inter
    iou = inter / union
    ok = box_valid_reference(a)[..., :, None] & box_valid_reference(b)[..., None, :]
    ok = ok & (union > 0) & torch.isfinite(iou)
    return torch.where(ok, iou, torch.zeros((), dtype=torch.float32)).clamp(0.0, 1.0)
