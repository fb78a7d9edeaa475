"""Triton backend for ``landmarks_to_regions``: the kernel, then its launcher.

One program handles a block of ``BLOCK_B`` faces (one per lane) and loops, at run time, over
the regions and each region's landmarks, keeping a running bounding box in registers (a
``[BLOCK_B, P]`` gather tile instead cost ~200 registers; this loop compiles to 32 on sm_80 and
sm_90 with no spills).
Landmarks of any float dtype are upcast to float32 right after ``tl.load`` (bf16 is wrong in
the interpreter otherwise). Works under ``TRITON_INTERPRET=1`` with CPU tensors.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from ._table import RegionTable

__all__ = ["BLOCK_B", "aot_compile_specs", "landmarks_to_regions_triton"]

#: faces per program
BLOCK_B = 128


@triton.jit
def _isfinite(x):
    # there is no tl.isfinite: x - x is 0 for finite x, NaN for inf/NaN
    return (x - x) == 0


@triton.jit
def _regions_kernel(
    lm_ptr,  # [B, L, 2] any float dtype, strided
    size_ptr,  # [B, 2] float32, strided
    index_ptr,  # [R, P] int32, contiguous, -1 padded
    count_ptr,  # [R] int32: real indices per row of index
    coef_ptr,  # [R, 6] float32, contiguous
    out_ptr,  # [B, R, 4] float32, contiguous
    B,
    R,
    P,
    ui,
    uj,
    s_lb,
    s_ll,
    s_lc,
    s_sb,
    s_sc,
    BLOCK_B: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_b = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    mb = offs_b < B
    ob = offs_b.to(tl.int64)
    base = lm_ptr + ob * s_lb

    # unit distance d and image size, per face
    xi = tl.load(base + ui * s_ll, mask=mb, other=0.0).to(tl.float32)
    yi = tl.load(base + ui * s_ll + s_lc, mask=mb, other=0.0).to(tl.float32)
    xj = tl.load(base + uj * s_ll, mask=mb, other=0.0).to(tl.float32)
    yj = tl.load(base + uj * s_ll + s_lc, mask=mb, other=0.0).to(tl.float32)
    ex = xi - xj
    ey = yi - yj
    d = tl.sqrt_rn(ex * ex + ey * ey)
    w = tl.load(size_ptr + ob * s_sb, mask=mb, other=0.0).to(tl.float32)
    h = tl.load(size_ptr + ob * s_sb + s_sc, mask=mb, other=0.0).to(tl.float32)
    face_ok = _isfinite(d) & (d > 0.0) & _isfinite(w) & (w > 0.0) & _isfinite(h) & (h > 0.0)

    out_row = out_ptr + ob * (R * 4)
    for r in range(R):
        # running bbox of the region's landmarks, one face per lane
        n = tl.load(count_ptr + r)
        xmin = tl.full((BLOCK_B,), float("inf"), tl.float32)
        xmax = tl.full((BLOCK_B,), float("-inf"), tl.float32)
        ymin = tl.full((BLOCK_B,), float("inf"), tl.float32)
        ymax = tl.full((BLOCK_B,), float("-inf"), tl.float32)
        pts_ok = mb
        for p in range(n):
            k = tl.load(index_ptr + r * P + p).to(tl.int64)
            px = tl.load(base + k * s_ll, mask=mb, other=0.0).to(tl.float32)
            py = tl.load(base + k * s_ll + s_lc, mask=mb, other=0.0).to(tl.float32)
            fin = _isfinite(px) & _isfinite(py)
            pts_ok = pts_ok & fin
            xmin = tl.minimum(xmin, tl.where(fin, px, float("inf")))
            xmax = tl.maximum(xmax, tl.where(fin, px, float("-inf")))
            ymin = tl.minimum(ymin, tl.where(fin, py, float("inf")))
            ymax = tl.maximum(ymax, tl.where(fin, py, float("-inf")))

        c0 = tl.load(coef_ptr + r * 6 + 0)
        c1 = tl.load(coef_ptr + r * 6 + 1)
        c2 = tl.load(coef_ptr + r * 6 + 2)
        c3 = tl.load(coef_ptr + r * 6 + 3)
        c4 = tl.load(coef_ptr + r * 6 + 4)
        c5 = tl.load(coef_ptr + r * 6 + 5)
        x1 = xmin + c0 * d
        x2 = xmax + c1 * d
        y1 = ymin + c2 * d
        y2 = ymax + c3 * d
        mw = c4 * d
        mh = c5 * d
        cx = 0.5 * (x1 + x2)
        cy = 0.5 * (y1 + y2)
        narrow = (x2 - x1) < mw
        short = (y2 - y1) < mh
        x1n = tl.where(narrow, cx - 0.5 * mw, x1)
        x2n = tl.where(narrow, cx + 0.5 * mw, x2)
        y1n = tl.where(short, cy - 0.5 * mh, y1)
        y2n = tl.where(short, cy + 0.5 * mh, y2)

        ok = face_ok & pts_ok
        ok = ok & _isfinite(x1n) & _isfinite(x2n) & _isfinite(y1n) & _isfinite(y2n)
        bx1 = tl.where(ok, tl.minimum(tl.maximum(x1n, 0.0), w), 0.0)
        by1 = tl.where(ok, tl.minimum(tl.maximum(y1n, 0.0), h), 0.0)
        bx2 = tl.where(ok, tl.minimum(tl.maximum(x2n, 0.0), w), 0.0)
        by2 = tl.where(ok, tl.minimum(tl.maximum(y2n, 0.0), h), 0.0)
        o = out_row + r * 4
        tl.store(o + 0, bx1, mask=mb)
        tl.store(o + 1, by1, mask=mb)
        tl.store(o + 2, bx2, mask=mb)
        tl.store(o + 3, by2, mask=mb)


def landmarks_to_regions_triton(
    landmarks: torch.Tensor, image_size: torch.Tensor, table: RegionTable
) -> torch.Tensor:
    """Launch the kernel: ``landmarks`` ``Tensor[B, L, 2]`` (any float dtype, any strides),
    ``image_size`` ``Tensor[B, 2]`` float32 -> ``Tensor[B, R, 4]`` float32. One launch, no host
    synchronisation. CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``."""
    dev = landmarks.device
    index, count, coef, _, _ = table.on_device("torch", dev)
    B = landmarks.shape[0]
    R, P = index.shape
    out = torch.empty((B, R, 4), dtype=torch.float32, device=dev)
    if B == 0:
        return out
    ui, uj = table.unit_points
    grid = (triton.cdiv(B, BLOCK_B),)
    _regions_kernel[grid](
        landmarks,
        image_size,
        index,
        count,
        coef,
        out,
        B,
        R,
        P,
        ui,
        uj,
        landmarks.stride(0),
        landmarks.stride(1),
        landmarks.stride(2),
        image_size.stride(0),
        image_size.stride(1),
        BLOCK_B=BLOCK_B,
        num_warps=4,
    )
    return out


def aot_compile_specs() -> list[tuple[Any, dict[str, str], dict[str, Any]]]:
    """``(kernel, signature, constexprs)`` triples to build real cubin ahead of time, e.g.::

        src = triton.compiler.ASTSource(fn=k, signature=sig, constexprs=cst)
        triton.compile(src, target=triton.backends.compiler.GPUTarget("cuda", 90, 32))

    One spec per landmark dtype that matters (fp32, and bf16 straight from a bf16 model); the
    kernel has no shape-dependent constexpr besides ``BLOCK_B``.
    Must run without ``TRITON_INTERPRET`` (the interpreter replaces the JIT function).
    """
    specs = []
    for lm_ty in ("*fp32", "*bf16"):
        sig = {
            "lm_ptr": lm_ty,
            "size_ptr": "*fp32",
            "index_ptr": "*i32",
            "count_ptr": "*i32",
            "coef_ptr": "*fp32",
            "out_ptr": "*fp32",
            "B": "i32",
            "R": "i32",
            "P": "i32",
            "ui": "i32",
            "uj": "i32",
            "s_lb": "i32",
            "s_ll": "i32",
            "s_lc": "i32",
            "s_sb": "i32",
            "s_sc": "i32",
            "BLOCK_B": "constexpr",
        }
        specs.append((_regions_kernel, sig, {"BLOCK_B": BLOCK_B}))
    return specs
