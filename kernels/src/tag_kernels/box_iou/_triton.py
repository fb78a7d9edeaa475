"""Triton backend of batched box IoU.

Layers, top to bottom: the shared ``@triton.jit`` IoU helper (also used by the AU-reward
kernel), the batched kernel, its launcher. Inputs are upcast to float32 right after
``tl.load`` (the interpreter mishandles bf16).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["aot_compile_specs", "box_iou_triton", "iou_tile"]


@triton.jit
def _valid(x1, y1, x2, y2):
    # There is no tl.isfinite; (v - v) == 0 is false exactly for NaN and +-inf.
    finite = ((x1 - x1) == 0) & ((y1 - y1) == 0) & ((x2 - x2) == 0) & ((y2 - y2) == 0)
    return finite & (x2 > x1) & (y2 > y1)


@triton.jit
def iou_tile(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2):
    """IoU of column vectors ``a*[BK, 1]`` against row vectors ``b*[1, BM]`` -> ``[BK, BM]``."""
    iw = tl.maximum(tl.minimum(ax2, bx2) - tl.maximum(ax1, bx1), 0.0)
    ih = tl.maximum(tl.minimum(ay2, by2) - tl.maximum(ay1, by1), 0.0)
    inter = iw * ih
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    union = area_a + area_b - inter
    ok = _valid(ax1, ay1, ax2, ay2) & _valid(bx1, by1, bx2, by2) & (union > 0)
    iou = tl.math.div_rn(inter, tl.where(ok, union, 1.0))  # IEEE, like the reference
    ok = ok & ((iou - iou) == 0)
    return tl.minimum(tl.where(ok, iou, 0.0), 1.0)


@triton.jit
def _box_iou_kernel(
    a_ptr, b_ptr, out_ptr, K, M,
    BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    kb = tl.program_id(1)
    mb = tl.program_id(2)
    ks = kb * BLOCK_K + tl.arange(0, BLOCK_K)
    ms = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    kmask = ks < K
    mmask = ms < M
    a_row = a_ptr + row * K * 4 + ks * 4
    b_row = b_ptr + row * M * 4 + ms * 4
    ax1 = tl.load(a_row + 0, mask=kmask, other=0.0).to(tl.float32)[:, None]
    ay1 = tl.load(a_row + 1, mask=kmask, other=0.0).to(tl.float32)[:, None]
    ax2 = tl.load(a_row + 2, mask=kmask, other=0.0).to(tl.float32)[:, None]
    ay2 = tl.load(a_row + 3, mask=kmask, other=0.0).to(tl.float32)[:, None]
    bx1 = tl.load(b_row + 0, mask=mmask, other=0.0).to(tl.float32)[None, :]
    by1 = tl.load(b_row + 1, mask=mmask, other=0.0).to(tl.float32)[None, :]
    bx2 = tl.load(b_row + 2, mask=mmask, other=0.0).to(tl.float32)[None, :]
    by2 = tl.load(b_row + 3, mask=mmask, other=0.0).to(tl.float32)[None, :]
    iou = iou_tile(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2)
    out = out_ptr + row * K * M + ks[:, None] * M + ms[None, :]
    tl.store(out, iou, mask=kmask[:, None] & mmask[None, :])


def _block(n: int) -> int:
    return max(16, min(32, triton.next_power_of_2(max(n, 1))))


def box_iou_triton(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Tensor[B, K, 4], Tensor[B, M, 4] -> Tensor[B, K, M]`` float32 on the inputs' device.

    One launch; a 3-D grid of ``(B, ceil(K/BLOCK_K), ceil(M/BLOCK_M))`` tiles.
    """
    a = a.contiguous()
    b = b.contiguous()
    B, K, _ = a.shape
    M = b.shape[1]
    out = torch.empty((B, K, M), dtype=torch.float32, device=a.device)
    if out.numel() == 0:
        return out
    bk, bm = _block(K), _block(M)
    grid = (B, triton.cdiv(K, bk), triton.cdiv(M, bm))
    _box_iou_kernel[grid](a, b, out, K, M, BLOCK_K=bk, BLOCK_M=bm, enable_fp_fusion=False)
    return out


def aot_compile_specs() -> list[tuple[object, dict[str, str], dict[str, object]]]:
    """``(kernel, signature, constexprs)`` triples for ahead-of-time compilation tests."""
    sig = {"a_ptr": "*fp32", "b_ptr": "*fp32", "out_ptr": "*fp32", "K": "i32", "M": "i32",
           "BLOCK_K": "constexpr", "BLOCK_M": "constexpr"}  # fmt: skip
    return [
        (_box_iou_kernel, sig, {"BLOCK_K": 16, "BLOCK_M": 16}),
        (
            _box_iou_kernel,
            {**sig, "a_ptr": "*bf16", "b_ptr": "*bf16"},
            {"BLOCK_K": 32, "BLOCK_M": 32},
        ),
    ]
