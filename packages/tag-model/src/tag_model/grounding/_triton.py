"""Triton backend of ``parse_batch`` for CUDA token ids: completions never leave the GPU.

Layers (as in ``tag_kernels``): the ``@triton.jit`` helpers and kernel, the launcher
:func:`scan_packed_triton`, and :func:`parse_batch_cuda`, which turns ``[B, T]`` token ids into
a packed UTF-8 byte buffer with a token-id -> bytes table gathered on the device (torch ops),
then launches one program per row.

The kernel implements the same grammar and rules as the Numba scanner of :mod:`._scanner`
(float64 number parsing with exact powers of ten, the limits and reason bits of :mod:`._codes`),
in more passes: the answer tags over the whole row, then the lines, then one search per pattern
where the Numba scanner walks each line once. Tests check that both give the same results. Triton has no ``break`` or local
arrays, so loops carry "still going" flags and a step's AUs live in a 16-slot register tensor.
Every value is per program (scalar), so every lane computes the same thing.

Host round trips: one ``.item()`` for the buffer size, and, only for rows whose answer text is
not a known spelling of a label, a copy of that answer's bytes (at most a few dozen bytes per
such row) to resolve it with :func:`tag_model.au.canonical_label`, as every other path does.

Without a GPU, the kernel runs under ``TRITON_INTERPRET=1`` (set before this module is
imported) on CPU tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import triton
import triton.language as tl

from . import _codes
from ._codes import (
    ANSWER_FALLBACK,
    COORD_LIMIT,
    KNOWN_AU_TABLE,
    MAX_AUS_PER_STEP,
    MAX_PAIRS,
    POW10,
    LabelTable,
    ParsedBatch,
)
from ._tokens import TokenBytes

__all__ = ["aot_compile_specs", "parse_batch_cuda", "scan_packed_triton"]

# Patterns, lower case, concatenated; (offset, length) of each.
_PATTERNS = [
    "<answer>", "</answer>", "<bbox>", "</bbox>",
    "global analysis:", "verification loop:", "final conclusion:", "inspect",
]  # fmt: skip
_PAT_BYTES = np.frombuffer("".join(_PATTERNS).encode("ascii"), dtype=np.uint8)
_PO = {}
_o = 0
for _p in _PATTERNS:
    _PO[_p] = _o
    _o += len(_p)
PO_OPEN: tl.constexpr = tl.constexpr(_PO["<answer>"])
PO_CLOSE: tl.constexpr = tl.constexpr(_PO["</answer>"])
PO_BBOX: tl.constexpr = tl.constexpr(_PO["<bbox>"])
PO_CBOX: tl.constexpr = tl.constexpr(_PO["</bbox>"])
PO_G: tl.constexpr = tl.constexpr(_PO["global analysis:"])
PO_V: tl.constexpr = tl.constexpr(_PO["verification loop:"])
PO_C: tl.constexpr = tl.constexpr(_PO["final conclusion:"])
PO_INSPECT: tl.constexpr = tl.constexpr(_PO["inspect"])

MAX_AUS: tl.constexpr = tl.constexpr(MAX_AUS_PER_STEP)
MAX_PAIRS_C: tl.constexpr = tl.constexpr(MAX_PAIRS)
LIMIT: tl.constexpr = tl.constexpr(COORD_LIMIT)


# ----------------------------------------------------------------------------- byte helpers
@triton.jit
def _zero():
    """An int32 scalar 0 (typed, so loop-carried counters keep one type)."""
    return tl.program_id(0) * 0


@triton.jit
def _ld(buf, i, end):
    """Byte ``i`` as int32, or -1 outside ``[0, end)`` (never equal to a pattern byte)."""
    ok = (i < end) & (i >= 0)
    c = tl.load(buf + i, mask=ok, other=0).to(tl.int32)
    return tl.where(ok, c, -1)


@triton.jit
def _lc(c):
    return tl.where((c >= 65) & (c <= 90), c + 32, c)


@triton.jit
def _is_ws(c):
    return (c == 32) | (c == 9) | (c == 13) | (c == 12) | (c == 11)


@triton.jit
def _is_alnum(c):
    return ((c >= 48) & (c <= 57)) | ((c >= 65) & (c <= 90)) | ((c >= 97) & (c <= 122))


@triton.jit
def _match(buf, i, end, pats, po, n: tl.constexpr):
    ok = _zero() + 1
    for k in tl.static_range(n):
        c = _lc(_ld(buf, i + k, end))
        p = tl.load(pats + po + k).to(tl.int32)
        ok = tl.where(c == p, ok, 0)
    return ok


@triton.jit
def _find(buf, a, b, pats, po, n: tl.constexpr):
    res = a * 0 - 1
    first = tl.load(pats + po).to(tl.int32)
    i = a
    while (i + n <= b) & (res < 0):
        c = _lc(_ld(buf, i, b))
        if c == first:
            m = _match(buf, i, b, pats, po, n)
            res = tl.where(m == 1, i, res)
        i += 1
    return res


@triton.jit
def _skip_ws(buf, i, b):
    go = _zero() + 1
    while go == 1:
        c = _ld(buf, i, b)
        w = _is_ws(c)
        i = tl.where(w, i + 1, i)
        go = tl.where(w, 1, 0)
    return i


@triton.jit
def _scan_aus(buf, rs, a, b, known, aus, n_aus, COLLECT: tl.constexpr):
    """AU mentions in ``[a, b)``; returns ``(aus, n_aus, mask)`` (``aus``: int32[16])."""
    slots = tl.arange(0, MAX_AUS)
    mask = _zero()
    i = a
    while i + 1 < b:
        c = _ld(buf, i, b)
        c1 = _ld(buf, i + 1, b)
        prev = tl.where(i > rs, _ld(buf, i - 1, b), 32)
        start = ((c == 97) | (c == 65)) & ((c1 == 117) | (c1 == 85)) & (_is_alnum(prev) == 0)
        nxt = i + 1
        if start:
            j = _skip_ws_tab(buf, i + 2, b)
            k = j
            v = n_aus * 0
            sig = n_aus * 0
            go = _zero() + 1
            while go == 1:
                d = _ld(buf, k, b) - 48
                isd = (d >= 0) & (d <= 9)
                sig = tl.where(isd & ((sig > 0) | (d != 0)), sig + 1, sig)
                v = tl.where(isd & (sig <= _codes.MAX_AU_DIGITS), v * 10 + d, v)
                k = tl.where(isd, k + 1, k)
                go = tl.where(isd, 1, 0)
            if k > j:
                nxt = k
                if sig > _codes.MAX_AU_DIGITS:
                    mask = mask | _codes.BIT_BAD_AU
                else:
                    kn = tl.load(known + v).to(tl.int32)
                    if kn == 0:
                        mask = mask | _codes.BIT_UNKNOWN_AU
                    if COLLECT:
                        dup = tl.sum(tl.where((slots < n_aus) & (aus == v), 1, 0), axis=0)
                        if dup == 0:
                            if n_aus >= MAX_AUS:
                                mask = mask | _codes.BIT_TOO_MANY_AUS
                            else:
                                aus = tl.where(slots == n_aus, v, aus)
                                n_aus += 1
        i = nxt
    return aus, n_aus, mask


@triton.jit
def _skip_ws_tab(buf, i, b):
    go = _zero() + 1
    while go == 1:
        c = _ld(buf, i, b)
        w = (c == 32) | (c == 9)
        i = tl.where(w, i + 1, i)
        go = tl.where(w, 1, 0)
    return i


@triton.jit
def _parse_num(buf, i, b, pow10):
    """One number at ``i``: returns ``(i_after, bad, huge, value_f64)``."""
    bad = _zero()
    neg = _ld(buf, i, b) == 45
    i = tl.where(neg, i + 1, i)
    mant = (i * 0).to(tl.int64)
    nd = _zero()
    nf = _zero()
    j = i
    go = _zero() + 1
    while go == 1:
        d = _ld(buf, j, b) - 48
        isd = (d >= 0) & (d <= 9)
        mant = tl.where(isd & (nd < _codes.MAX_NUMBER_DIGITS), mant * 10 + d, mant)
        nd = tl.where(isd, nd + 1, nd)
        j = tl.where(isd, j + 1, j)
        go = tl.where(isd, 1, 0)
    if j == i:
        bad = _zero() + 1
    i = j
    if (bad == 0) & (_ld(buf, i, b) == 46):
        j = i + 1
        go = _zero() + 1
        while go == 1:
            d = _ld(buf, j, b) - 48
            isd = (d >= 0) & (d <= 9)
            mant = tl.where(isd & (nd < _codes.MAX_NUMBER_DIGITS), mant * 10 + d, mant)
            nd = tl.where(isd, nd + 1, nd)
            nf = tl.where(isd, nf + 1, nf)
            j = tl.where(isd, j + 1, j)
            go = tl.where(isd, 1, 0)
        if nf == 0:
            bad = _zero() + 1
        i = j
    huge = _zero()
    val = mant.to(tl.float64) * 0.0
    if nd > _codes.MAX_NUMBER_DIGITS:
        huge = _zero() + 1
    else:
        p = tl.load(pow10 + nf)
        val = mant.to(tl.float64) / p
        val = tl.where(neg, -val, val)
        if tl.abs(val) > LIMIT:
            huge = _zero() + 1
    return i, bad, huge, val


@triton.jit
def _parse_box(buf, a, b, pow10):
    """``[x1,y1,x2,y2]`` in ``[a, b)``: returns ``(status_bit, x1, y1, x2, y2)`` (0 = valid)."""
    i = _skip_ws(buf, a, b)
    bracket = _ld(buf, i, b) == 91
    i = tl.where(bracket, _skip_ws(buf, i + 1, b), i)
    bad = _zero()
    huge = _zero()
    i, bd, hg, x1 = _parse_num(buf, i, b, pow10)
    bad = bad | bd
    huge = huge | hg
    i = _skip_ws(buf, i, b)
    y1 = x1
    x2 = x1
    y2 = x1
    if bad == 0:
        if _ld(buf, i, b) == 44:
            i = _skip_ws(buf, i + 1, b)
            i, bd, hg, y1 = _parse_num(buf, i, b, pow10)
            bad = bad | bd
            huge = huge | hg
            i = _skip_ws(buf, i, b)
        else:
            bad = _zero() + 1
    if bad == 0:
        if _ld(buf, i, b) == 44:
            i = _skip_ws(buf, i + 1, b)
            i, bd, hg, x2 = _parse_num(buf, i, b, pow10)
            bad = bad | bd
            huge = huge | hg
            i = _skip_ws(buf, i, b)
        else:
            bad = _zero() + 1
    if bad == 0:
        if _ld(buf, i, b) == 44:
            i = _skip_ws(buf, i + 1, b)
            i, bd, hg, y2 = _parse_num(buf, i, b, pow10)
            bad = bad | bd
            huge = huge | hg
            i = _skip_ws(buf, i, b)
        else:
            bad = _zero() + 1
    if (bad == 0) & bracket:
        if _ld(buf, i, b) == 93:
            i = _skip_ws(buf, i + 1, b)
        else:
            bad = _zero() + 1
    if (bad == 0) & (i != b):
        bad = _zero() + 1
    status = _zero()
    if bad != 0:
        status = _codes.BIT_BAD_BOX
    elif huge != 0:
        status = _codes.BIT_HUGE_COORD
    elif (x1 >= x2) | (y1 >= y2):
        status = _codes.BIT_INVERTED_BOX
    return status, x1, y1, x2, y2


@triton.jit
def _lookup_answer(buf, a, b, keys, key_len, key_id, n_keys, KEY_W: tl.constexpr):
    """Label id of the answer text in ``[a, b)``; -2 when no key matches (ask the host)."""
    res = _zero() + -2
    r = _zero()
    while (r < n_keys) & (res == -2):
        klen = tl.load(key_len + r)
        pos = _zero()
        ok = _zero() + 1
        pending = _zero()
        i = a
        while (i < b) & (ok == 1):
            c = _ld(buf, i, b)
            w = (c == 32) | ((c >= 9) & (c <= 13))
            if w:
                pending = _zero() + 1
            else:
                if (pending == 1) & (pos > 0):
                    kc = tl.load(keys + r * KEY_W + pos, mask=pos < KEY_W, other=0).to(tl.int32)
                    ok = tl.where((pos < klen) & (kc == 32), ok, 0)
                    pos += 1
                pending = _zero()
                kc = tl.load(keys + r * KEY_W + pos, mask=pos < KEY_W, other=0).to(tl.int32)
                ok = tl.where((pos < klen) & (kc == _lc(c)), ok, 0)
                pos += 1
            i += 1
        if (ok == 1) & (pos == klen):
            res = tl.load(key_id + r)
        r += 1
    return res


# ----------------------------------------------------------------------------- the kernel
@triton.jit
def _parse_kernel(
    buf, offsets, pats, known, pow10, keys, key_len, key_id, n_keys,
    out_au, out_box, out_n, out_answer, out_span, out_mask, K,
    KEY_W: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    rs = tl.load(offsets + row)
    re_ = tl.load(offsets + row + 1)
    slots = tl.arange(0, MAX_AUS)
    mask = _zero()

    # 1. answer tags over the whole row
    n_open = _zero()
    n_close = _zero()
    o1 = rs * 0 - 1
    o2 = rs * 0 - 1
    c1 = rs * 0 - 1
    i = rs
    while i < re_:
        nxt = i + 1
        if _ld(buf, i, re_) == 60:
            if _match(buf, i, re_, pats, PO_OPEN, 8) == 1:
                n_open += 1
                if o1 < 0:
                    o1 = i
                elif o2 < 0:
                    o2 = i
                nxt = i + 8
            elif _match(buf, i, re_, pats, PO_CLOSE, 9) == 1:
                n_close += 1
                if (o1 >= 0) & (c1 < 0):
                    c1 = i
                nxt = i + 9
        i = nxt
    body_end = tl.where(o1 >= 0, o1, re_)

    # 2. lines of the body
    seen1 = _zero()
    seen2 = _zero()
    seen3 = _zero()
    max_rank = _zero()
    section = _zero()
    active = _zero()
    g_nonempty = _zero()
    c_nonempty = _zero()
    n_boxed = _zero()
    total = _zero()
    aus = tl.full([MAX_AUS], -1, tl.int32)
    ls = rs
    go = _zero() + 1
    while go == 1:
        le = ls
        more = _zero() + 1
        while more == 1:
            nl = (le < body_end) & (_ld(buf, le, body_end) != 10)
            le = tl.where(nl, le + 1, le)
            more = tl.where(nl, 1, 0)
        p = _skip_ws(buf, ls, le)
        cs = ls
        h = _zero()
        hl = _zero()
        if _match(buf, p, le, pats, PO_G, 16) == 1:
            h = _zero() + 1
            hl = _zero() + 16
        elif _match(buf, p, le, pats, PO_V, 18) == 1:
            h = _zero() + 2
            hl = _zero() + 18
        elif _match(buf, p, le, pats, PO_C, 17) == 1:
            h = _zero() + 3
            hl = _zero() + 17
        if h > 0:
            seen_h = tl.where(h == 1, seen1, tl.where(h == 2, seen2, seen3))
            if seen_h == 1:
                mask = mask | _codes.BIT_DUPLICATE_SECTION
            elif h < max_rank:
                mask = mask | _codes.BIT_SECTION_ORDER
            active = _zero()
            if (seen_h == 0) & (h != 2):
                active = h
            seen1 = tl.where(h == 1, 1, seen1)
            seen2 = tl.where(h == 2, 1, seen2)
            seen3 = tl.where(h == 3, 1, seen3)
            max_rank = tl.maximum(max_rank, h)
            section = h
            cs = p + hl
        if section == 1:
            if (active == 1) & (g_nonempty == 0):
                q = _skip_ws(buf, cs, le)
                g_nonempty = tl.where(q < le, 1, 0)
        elif section == 3:
            if (active == 3) & (c_nonempty == 0):
                q = _skip_ws(buf, cs, le)
                c_nonempty = tl.where(q < le, 1, 0)
            aus, _n, m = _scan_aus(buf, rs, cs, le, known, aus, _zero(), False)
            mask = mask | m
        elif section == 2:
            q = _skip_ws(buf, cs, le)
            if q < le:
                bb = _find(buf, cs, le, pats, PO_BBOX, 6)
                seg_end = tl.where(bb >= 0, bb, le)
                n_arr = _zero()
                last_end = cs
                t = cs
                while t < seg_end:
                    c = _ld(buf, t, seg_end)
                    nt = t + 1
                    if (c == 45) & (_ld(buf, t + 1, seg_end) == 62):
                        n_arr += 1
                        last_end = t + 2
                        nt = t + 2
                    elif (
                        (c == 0xE2)
                        & (_ld(buf, t + 1, seg_end) == 0x86)
                        & (_ld(buf, t + 2, seg_end) == 0x92)
                    ):
                        n_arr += 1
                        last_end = t + 3
                        nt = t + 3
                    t = nt
                aus = tl.full([MAX_AUS], -1, tl.int32)
                aus, n_aus, m = _scan_aus(buf, rs, last_end, seg_end, known, aus, _zero(), True)
                mask = mask | m
                if bb >= 0:
                    n_boxed += 1
                    if (n_arr < 2) | (_match(buf, q, le, pats, PO_INSPECT, 7) == 0):
                        mask = mask | _codes.BIT_MALFORMED_STEP
                    close = _find(buf, bb + 6, le, pats, PO_CBOX, 7)
                    if close < 0:
                        mask = mask | _codes.BIT_UNCLOSED_BBOX
                    else:
                        st, x1, y1, x2, y2 = _parse_box(buf, bb + 6, close, pow10)
                        if _find(buf, close + 7, le, pats, PO_BBOX, 6) >= 0:
                            mask = mask | _codes.BIT_EXTRA_BBOX
                        mask = mask | st
                        if st == 0:
                            n_emit = tl.where(n_aus > 0, n_aus, 1)
                            u = _zero()
                            while u < n_emit:
                                if total >= MAX_PAIRS_C:
                                    mask = mask | _codes.BIT_TOO_MANY_PAIRS
                                    u = n_emit
                                else:
                                    if total < K:
                                        au = tl.sum(tl.where(slots == u, aus, 0), axis=0)
                                        au = tl.where(n_aus > 0, au, 0)
                                        tl.store(out_au + row * K + total, au)
                                        base = out_box + (row * K + total) * 4
                                        tl.store(base + 0, x1.to(tl.float32))
                                        tl.store(base + 1, y1.to(tl.float32))
                                        tl.store(base + 2, x2.to(tl.float32))
                                        tl.store(base + 3, y2.to(tl.float32))
                                    total += 1
                                    u += 1
        go = tl.where(le >= body_end, 0, 1)
        ls = le + 1

    if seen1 == 0:
        mask = mask | _codes.BIT_MISSING_GLOBAL_ANALYSIS
    elif g_nonempty == 0:
        mask = mask | _codes.BIT_EMPTY_SECTION
    if seen2 == 0:
        mask = mask | _codes.BIT_MISSING_VERIFICATION_LOOP
    elif n_boxed == 0:
        mask = mask | _codes.BIT_NO_BOXED_STEP
    if seen3 == 0:
        mask = mask | _codes.BIT_MISSING_CONCLUSION
    elif c_nonempty == 0:
        mask = mask | _codes.BIT_EMPTY_SECTION

    # 3. the answer
    answer = _zero() + -1
    a = rs * 0 - 1
    b = rs * 0 - 1
    if o1 < 0:
        mask = mask | _codes.BIT_MISSING_ANSWER
    elif n_open >= 2:
        if (c1 < 0) | (o2 < c1):
            mask = mask | _codes.BIT_NESTED_ANSWER
        else:
            mask = mask | _codes.BIT_DUPLICATE_ANSWER
    elif c1 < 0:
        mask = mask | _codes.BIT_UNCLOSED_ANSWER
    elif n_close >= 2:
        mask = mask | _codes.BIT_DUPLICATE_ANSWER
    else:
        a = o1 + 8
        b = c1
        answer = _lookup_answer(buf, a, b, keys, key_len, key_id, n_keys, KEY_W)
        if answer == -1:
            mask = mask | _codes.BIT_ANSWER_NOT_IN_LABELS
    tl.store(out_n + row, tl.minimum(total, K))
    tl.store(out_answer + row, answer)
    tl.store(out_span + row * 2, a)
    tl.store(out_span + row * 2 + 1, b)
    tl.store(out_mask + row, mask)


# ----------------------------------------------------------------------------- launchers
_CONST_CACHE: dict[tuple[str, int], dict[str, torch.Tensor]] = {}


def _consts(device: torch.device) -> dict[str, torch.Tensor]:
    key = (device.type, device.index or 0)
    c = _CONST_CACHE.get(key)
    if c is None:
        c = {
            "pats": torch.from_numpy(_PAT_BYTES.copy()).to(device),
            "known": torch.from_numpy(KNOWN_AU_TABLE.astype(np.uint8)).to(device),
            "pow10": torch.from_numpy(POW10.copy()).to(device),
        }
        _CONST_CACHE[key] = c
    return c


def scan_packed_triton(
    buf: torch.Tensor, offsets: torch.Tensor, table: LabelTable, max_pairs: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Launch the kernel on a packed buffer (``uint8[N]``, ``int64[B + 1]`` on one device).

    Returns the raw outputs (``pred_au``, ``pred_boxes``, ``n_pairs``, ``answer_id``,
    ``reason_mask``) and the answer spans ``int64[B, 2]``; answers still -2 need the host.
    """
    dev = buf.device
    B = int(offsets.shape[0]) - 1
    K = int(max_pairs)
    c = _consts(dev)
    out = {
        "pred_au": torch.full((B, K), -1, dtype=torch.int32, device=dev),
        "pred_boxes": torch.zeros((B, K, 4), dtype=torch.float32, device=dev),
        "n_pairs": torch.zeros(B, dtype=torch.int32, device=dev),
        "answer_id": torch.full((B,), -1, dtype=torch.int32, device=dev),
        "reason_mask": torch.zeros(B, dtype=torch.int32, device=dev),
    }
    span = torch.full((B, 2), -1, dtype=torch.int64, device=dev)
    if buf.numel() == 0:  # a valid pointer for empty buffers
        buf = torch.zeros(1, dtype=torch.uint8, device=dev)
    keys = torch.from_numpy(np.array(table.keys)).to(dev)
    key_len = torch.from_numpy(np.array(table.key_len)).to(dev)
    key_id = torch.from_numpy(np.array(table.key_id)).to(dev)
    if B:
        _parse_kernel[(B,)](
            buf, offsets, c["pats"], c["known"], c["pow10"], keys, key_len, key_id,
            int(keys.shape[0]),
            out["pred_au"], out["pred_boxes"], out["n_pairs"], out["answer_id"], span,
            out["reason_mask"], K,
            KEY_W=int(keys.shape[1]), num_warps=1,
        )  # fmt: skip
    return out, span


def _lowest_bit_torch(mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(torch.int64)
    low = m & -m
    bits = torch.arange(31, device=mask.device, dtype=torch.int64)
    hit = (low[:, None] >> bits[None, :]) & 1
    return (hit * bits[None, :]).sum(dim=1).to(torch.int32)


def finish_on_device(
    buf: torch.Tensor,
    out: dict[str, torch.Tensor],
    span: torch.Tensor,
    table: LabelTable,
    errors: str,
) -> ParsedBatch:
    """Resolve unresolved answers (copying only their bytes) and build the batch."""
    ans = out["answer_id"]
    need = torch.nonzero(ans == ANSWER_FALLBACK).flatten()
    if need.numel():
        sp = span[need].cpu().numpy()
        ids = []
        for a, b in sp.tolist():
            raw = bytes(buf[a:b].cpu().numpy().tobytes())
            ids.append(table.resolve(raw.decode("utf-8", errors)))
        idt = torch.tensor(ids, dtype=torch.int32, device=ans.device)
        ans[need] = idt
        miss = need[idt < 0]
        out["reason_mask"][miss] |= _codes.BIT_ANSWER_NOT_IN_LABELS
    mask = out["reason_mask"]
    return ParsedBatch(
        pred_au=out["pred_au"],
        pred_boxes=out["pred_boxes"],
        n_pairs=out["n_pairs"],
        answer_id=ans,
        format_ok=mask == 0,
        reason=_lowest_bit_torch(mask),
        reason_mask=mask,
        labels=table.names,
    )


_TABLE_CACHE: dict[tuple[int, str], tuple[TokenBytes, torch.Tensor, torch.Tensor]] = {}


def _device_table(tb: TokenBytes, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(offsets, data)`` of ``tb`` on ``dev``, copied once per table and device."""
    key = (id(tb), str(dev))
    hit = _TABLE_CACHE.get(key)
    if hit is None or hit[0] is not tb:
        if len(_TABLE_CACHE) > 8:
            _TABLE_CACHE.clear()
        hit = (tb, torch.from_numpy(tb.offsets).to(dev), torch.from_numpy(tb.data.copy()).to(dev))
        _TABLE_CACHE[key] = hit
    return hit[1], hit[2]


def pack_tokens_torch(
    ids: torch.Tensor, tb: TokenBytes, pad_id: int | None, lengths: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather token bytes on ``ids``' device: ``(buf uint8[N], offsets int64[B + 1])``."""
    dev = ids.device
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2:
        raise ValueError(f"parse_batch: token ids must be [B, T], got shape {tuple(ids.shape)}")
    ids = ids.to(torch.int64)
    B, T = ids.shape
    tok_off, data = _device_table(tb, dev)
    V = tb.vocab_size
    valid = (ids >= 0) & (ids < V)
    if pad_id is not None:
        valid &= ids != pad_id
    if lengths is not None:
        ln = torch.as_tensor(lengths, device=dev).to(torch.int64).reshape(B, 1)
        valid &= torch.arange(T, device=dev)[None, :] < ln
    safe = torch.where(valid, ids, torch.zeros_like(ids))
    start = tok_off[safe]
    lens = torch.where(valid, tok_off[safe + 1] - start, torch.zeros_like(start))
    flat_len = lens.reshape(-1)
    ends = torch.cumsum(flat_len, 0)
    total = int(ends[-1].item()) if ends.numel() else 0
    row_bytes = lens.sum(dim=1)
    offsets = torch.zeros(B + 1, dtype=torch.int64, device=dev)
    offsets[1:] = torch.cumsum(row_bytes, 0)
    if total == 0:
        return torch.zeros(0, dtype=torch.uint8, device=dev), offsets
    out_start = ends - flat_len
    shift = torch.repeat_interleave(start.reshape(-1) - out_start, flat_len, output_size=total)
    src = shift + torch.arange(total, device=dev, dtype=torch.int64)
    return data[src], offsets


def parse_batch_cuda(
    ids: torch.Tensor, tb: TokenBytes, table: LabelTable, max_pairs: int, pad_id: int | None,
    lengths: Any,
) -> ParsedBatch:  # fmt: skip
    """``parse_batch`` for token ids on a CUDA device (or CPU tensors under the interpreter)."""
    from ._native import normalise_native_boxes

    buf, offsets = pack_tokens_torch(ids, tb, pad_id, lengths)
    buf = normalise_native_boxes(buf)  # InternVL's <box>[[..]]</box>, same length, on device
    out, span = scan_packed_triton(buf, offsets, table, max_pairs)
    return finish_on_device(buf, out, span, table, "replace")


def aot_compile_specs() -> list[tuple[object, dict[str, str], dict[str, object]]]:
    """``(kernel, signature, constexprs)`` triples for ahead-of-time compilation tests."""
    sig = {
        "buf": "*u8", "offsets": "*i64", "pats": "*u8", "known": "*u8", "pow10": "*fp64",
        "keys": "*u8", "key_len": "*i32", "key_id": "*i32", "n_keys": "i32",
        "out_au": "*i32", "out_box": "*fp32", "out_n": "*i32", "out_answer": "*i32",
        "out_span": "*i64", "out_mask": "*i32", "K": "i32", "KEY_W": "constexpr",
    }  # fmt: skip
    return [(_parse_kernel, sig, {"KEY_W": 32})]
