"""Plain-torch ``activated_list``: the specification every backend is tested against.

The semantics are written in :mod:`tag_kernels.activated_list`.
"""

from __future__ import annotations

import torch

from ..regions._table import RegionTable

__all__ = ["activated_list_torch"]


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
