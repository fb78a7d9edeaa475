"""Plain-torch reference for ``landmarks_to_regions``: the written specification.

Every other backend must agree with this function (see ``regions/_table.py`` for the recipe
in words). It is vectorised over faces and regions and runs on any torch device.
"""

from __future__ import annotations

import torch

from ._table import RegionTable

__all__ = ["landmarks_to_regions_torch"]


def landmarks_to_regions_torch(
    landmarks: torch.Tensor, image_size: torch.Tensor, table: RegionTable
) -> torch.Tensor:
    """Region boxes from landmarks, in plain torch.

    Args:
        landmarks: ``Tensor[B, L, 2]`` (x, y) image pixels, any float dtype.
        image_size: ``Tensor[B, 2]`` as (w, h).
        table: the region recipes; ``L`` must be at least ``table.packed.min_landmarks``.

    Returns:
        ``Tensor[B, R, 4]`` float32 xyxy boxes clamped to ``[0, w] x [0, h]``; degenerate
        faces/regions give ``(0, 0, 0, 0)``.
    """
    index, _, coef, _, _ = table.on_device("torch", landmarks.device)
    lm = landmarks.to(torch.float32)
    size = image_size.to(torch.float32)
    B = lm.shape[0]
    R = index.shape[0]

    # 1. unit distance d: [B]
    i, j = table.unit_points
    ex = lm[:, i, 0] - lm[:, j, 0]
    ey = lm[:, i, 1] - lm[:, j, 1]
    d = torch.sqrt(ex * ex + ey * ey)

    # 2. bounding box of each region's landmarks: [B, R]
    present = index >= 0  # [R, P]
    pts = lm[:, index.clamp(min=0).long()]  # [B, R, P, 2]
    finite_pts = torch.isfinite(pts).all(dim=-1) | ~present  # padding counts as finite
    inf = torch.tensor(float("inf"), device=lm.device)
    px, py = pts[..., 0], pts[..., 1]
    xmin = torch.where(present, px, inf).amin(dim=-1)
    xmax = torch.where(present, px, -inf).amax(dim=-1)
    ymin = torch.where(present, py, inf).amin(dim=-1)
    ymax = torch.where(present, py, -inf).amax(dim=-1)

    # 3. shift + pad in units of d (coef = dx-pad_x, dx+pad_x, dy-pad_y, dy+pad_y, min_w, min_h)
    dd = d[:, None]
    x1 = xmin + coef[:, 0] * dd
    x2 = xmax + coef[:, 1] * dd
    y1 = ymin + coef[:, 2] * dd
    y2 = ymax + coef[:, 3] * dd

    # 4. minimum size: re-centre boxes narrower than min_w*d (or lower than min_h*d)
    mw = coef[:, 4] * dd
    mh = coef[:, 5] * dd
    cx = 0.5 * (x1 + x2)
    cy = 0.5 * (y1 + y2)
    narrow = (x2 - x1) < mw
    short = (y2 - y1) < mh
    x1, x2 = torch.where(narrow, cx - 0.5 * mw, x1), torch.where(narrow, cx + 0.5 * mw, x2)
    y1, y2 = torch.where(short, cy - 0.5 * mh, y1), torch.where(short, cy + 0.5 * mh, y2)

    # degenerate: non-finite landmarks, bad d, bad image size, or overflow -> zero box
    w, h = size[:, 0:1], size[:, 1:2]
    valid = (
        finite_pts.all(dim=-1)
        & (torch.isfinite(d) & (d > 0))[:, None]
        & (torch.isfinite(w) & (w > 0) & torch.isfinite(h) & (h > 0))
        & torch.isfinite(x1)
        & torch.isfinite(x2)
        & torch.isfinite(y1)
        & torch.isfinite(y2)
    )

    # 5. clamp to the image
    zero = torch.zeros((), device=lm.device)
    w0 = torch.where(valid, w, zero)
    h0 = torch.where(valid, h, zero)
    boxes = torch.stack(
        [
            torch.minimum(torch.clamp(x1, min=0.0), w0),
            torch.minimum(torch.clamp(y1, min=0.0), h0),
            torch.minimum(torch.clamp(x2, min=0.0), w0),
            torch.minimum(torch.clamp(y2, min=0.0), h0),
        ],
        dim=-1,
    )
    boxes = torch.where(valid[..., None], boxes, zero)
    assert boxes.shape == (B, R, 4)
    return boxes.contiguous()
