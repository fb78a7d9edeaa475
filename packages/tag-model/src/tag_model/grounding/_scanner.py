"""The Numba scanner behind ``parse_batch``: one compiled walk per completion.

The scanner implements the grammar of :mod:`._parse` and returns exactly what
:func:`~tag_model.grounding.parse_trace` returns for every field it has; tests check this on a
fuzz corpus. It makes one walk per line of the body: a line ends at ``\n`` or at the first
``<answer>`` (the body's end); the walk matches the header at the line start, then for a step
counts arrows, finds the first ``<bbox>``, its ``</bbox>`` and any later ``<bbox>``, and counts
the ``</answer>`` tags it passes. Then only the AU tail of a step, its box and the conclusion's
AU mentions are read again, and the answer tags after the body. Patterns are matched bounded by
the row end rather than the line end: none contains ``\n`` and each has ``<`` only at index 0,
so no match can straddle a line end or the body's end, and the results equal the bounded
searches of :mod:`._parse`.

The same kernel compiles for UTF-8 bytes (``uint8``) and code points (``uint32``); only the
arrow differs (one code point ``U+2192`` or the bytes ``E2 86 92``). Every other pattern is
ASCII, so a code-point scan and a byte scan see the same text.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _codes
from ._codes import (
    ANSWER_FALLBACK,
    COORD_LIMIT,
    KNOWN_AU_TABLE,
    MAX_AU_DIGITS,
    MAX_AUS_PER_STEP,
    MAX_NUMBER_DIGITS,
    MAX_PAIRS,
    NUMBA_CACHE,
    POW10,
    ParseReason,
)

__all__ = ["PARALLEL_MIN_BYTES", "scan_batch"]


def _pat(s: str) -> np.ndarray:
    a = np.frombuffer(s.encode("ascii"), dtype=np.uint8).copy()
    a.setflags(write=False)
    return a


_P_OPEN = _pat("<answer>")
_P_CLOSE = _pat("</answer>")
_P_BBOX = _pat("<bbox>")
_P_CBOX = _pat("</bbox>")
_P_G = _pat("global analysis:")
_P_V = _pat("verification loop:")
_P_C = _pat("final conclusion:")
_P_INSPECT = _pat("inspect")
_KNOWN = KNOWN_AU_TABLE
_POW10 = POW10

_BOX_OK = 0
_BOX_BAD = int(ParseReason.BAD_BOX)
_BOX_HUGE = int(ParseReason.HUGE_COORD)
_BOX_INV = int(ParseReason.INVERTED_BOX)
_MAX_AUS = MAX_AUS_PER_STEP
_MAX_PAIRS = MAX_PAIRS
_MAX_DIG = MAX_NUMBER_DIGITS
_MAX_AU_DIG = MAX_AU_DIGITS
_LIMIT = COORD_LIMIT
_ANSWER_FALLBACK = ANSWER_FALLBACK


# ----------------------------------------------------------------------------- byte helpers
@njit(cache=NUMBA_CACHE, inline="always")
def _lc(c: int) -> int:
    return c + 32 if 65 <= c <= 90 else c


@njit(cache=NUMBA_CACHE, inline="always")
def _is_ws(c: int) -> bool:  # line-internal whitespace: space, \t, \r, \f, \v
    return c == 32 or c == 9 or c == 13 or c == 12 or c == 11


@njit(cache=NUMBA_CACHE, inline="always")
def _is_alnum(c: int) -> bool:
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)


@njit(cache=NUMBA_CACHE)
def _match(buf, i, end, pat):
    n = pat.shape[0]
    if i + n > end:
        return False
    for k in range(n):  # noqa: SIM110 - numba has no generators in all()
        if _lc(buf[i + k]) != pat[k]:
            return False
    return True


@njit(cache=NUMBA_CACHE, inline="always")
def _answer_tag(buf, i, end):
    """At ``buf[i] == '<'``: 1 for ``<answer>``, 2 for ``</answer>``, else 0."""
    if _match(buf, i, end, _P_OPEN):
        return 1
    if _match(buf, i, end, _P_CLOSE):
        return 2
    return 0


@njit(cache=NUMBA_CACHE)
def _skip_ws(buf, i, b):
    while i < b and _is_ws(buf[i]):
        i += 1
    return i


@njit(cache=NUMBA_CACHE)
def _scan_aus(buf, rs, a, b, aus, n_aus, collect):
    """AU mentions in ``[a, b)``: flags, and (``collect``) distinct AUs into ``aus``."""
    mask = 0
    i = a
    while i + 1 < b:
        c = buf[i]
        if (
            (c == 97 or c == 65)
            and (buf[i + 1] == 117 or buf[i + 1] == 85)
            and (i == rs or not _is_alnum(buf[i - 1]))
        ):
            j = i + 2
            while j < b and (buf[j] == 32 or buf[j] == 9):
                j += 1
            k = j
            v = 0
            sig = 0
            while k < b and 48 <= buf[k] <= 57:
                d = buf[k] - 48
                if sig > 0 or d != 0:
                    sig += 1
                if sig <= _MAX_AU_DIG:
                    v = v * 10 + d
                k += 1
            if k == j:
                i += 1
                continue
            i = k
            if sig > _MAX_AU_DIG:
                mask |= _codes.BIT_BAD_AU
                continue
            if not _KNOWN[v]:
                mask |= _codes.BIT_UNKNOWN_AU
            if collect:
                dup = False
                for t in range(n_aus):
                    if aus[t] == v:
                        dup = True
                if not dup:
                    if n_aus >= _MAX_AUS:
                        mask |= _codes.BIT_TOO_MANY_AUS
                    else:
                        aus[n_aus] = v
                        n_aus += 1
            continue
        i += 1
    return n_aus, mask


@njit(cache=NUMBA_CACHE)
def _parse_box(buf, a, b, vals):
    """Parse ``[x1,y1,x2,y2]`` in ``[a, b)`` into ``vals``; returns a box status code."""
    i = _skip_ws(buf, a, b)
    bracket = False
    if i < b and buf[i] == 91:
        bracket = True
        i = _skip_ws(buf, i + 1, b)
    huge = False
    for k in range(4):
        if k > 0:
            if i < b and buf[i] == 44:
                i = _skip_ws(buf, i + 1, b)
            else:
                return _BOX_BAD
        neg = False
        if i < b and buf[i] == 45:
            neg = True
            i += 1
        mant = 0
        nd = 0
        j = i
        while j < b and 48 <= buf[j] <= 57:
            if nd < _MAX_DIG:
                mant = mant * 10 + (buf[j] - 48)
            nd += 1
            j += 1
        if j == i:
            return _BOX_BAD
        i = j
        nf = 0
        if i < b and buf[i] == 46:
            j = i + 1
            while j < b and 48 <= buf[j] <= 57:
                if nd < _MAX_DIG:
                    mant = mant * 10 + (buf[j] - 48)
                nd += 1
                nf += 1
                j += 1
            if nf == 0:
                return _BOX_BAD
            i = j
        if nd > _MAX_DIG:
            huge = True
            vals[k] = 0.0
        else:
            v = np.float64(mant) / _POW10[nf]
            if neg:
                v = -v
            if abs(v) > _LIMIT:
                huge = True
            vals[k] = v
        i = _skip_ws(buf, i, b)
    if bracket:
        if i < b and buf[i] == 93:
            i = _skip_ws(buf, i + 1, b)
        else:
            return _BOX_BAD
    if i != b:
        return _BOX_BAD
    if huge:
        return _BOX_HUGE
    if not (vals[0] < vals[2] and vals[1] < vals[3]):
        return _BOX_INV
    return _BOX_OK


@njit(cache=NUMBA_CACHE)
def _lookup_answer(buf, a, b, keys, key_len, key_id):
    """Label id of the answer text in ``[a, b)`` via the key table; -2 = ask Python."""
    width = keys.shape[1]
    key = np.zeros(width, dtype=np.uint8)
    n = 0
    pending = False
    for i in range(a, b):
        c = buf[i]
        if c >= 128 or (28 <= c <= 31):
            return _ANSWER_FALLBACK
        if c == 32 or c == 10 or (9 <= c <= 13):
            pending = True
            continue
        if pending and n > 0:
            if n >= width:
                return _ANSWER_FALLBACK
            key[n] = 32
            n += 1
        pending = False
        if n >= width:
            return _ANSWER_FALLBACK
        key[n] = _lc(c)
        n += 1
    for r in range(keys.shape[0]):
        if key_len[r] != n:
            continue
        same = True
        for t in range(n):
            if keys[r, t] != key[t]:
                same = False
                break
        if same:
            return key_id[r]
    return _ANSWER_FALLBACK


# ----------------------------------------------------------------------------- the row scanner
@njit(cache=NUMBA_CACHE)
def _scan_row(buf, rs, re_, keys, key_len, key_id, out_au, out_box, aus, vals):
    """Scan one completion ``buf[rs:re_]``. Returns ``(n_pairs, answer_id, a, b, mask)``.

    One walk per line of the body (see the module docstring): a line ends at ``\\n`` or at the
    first ``<answer>`` (the body's end). Patterns are matched bounded by the row end ``re_``:
    none contains ``\\n`` and each has ``<`` only at index 0, so no match can straddle a line
    end or the body's end, and every result equals the bounded search of :mod:`._parse`.
    """
    K = out_au.shape[0]
    narrow = buf.itemsize == 1  # UTF-8 bytes (else code points)
    mask = 0
    n_close = 0  # '</answer>' seen before the body's end
    body_end = -1  # the first '<answer>', once seen
    seen1 = False
    seen2 = False
    seen3 = False
    max_rank = 0
    section = 0
    active = 0
    g_nonempty = False
    c_nonempty = False
    n_boxed = 0
    total = 0
    ls = rs
    while True:
        # the header, if the line starts with one (after whitespace)
        p = _skip_ws(buf, ls, re_)
        cs = ls
        h = 0
        if p < re_:
            c0 = buf[p] | 32
            if c0 == 103 and _match(buf, p, re_, _P_G):
                h = 1
                cs = p + 16
            elif c0 == 118 and _match(buf, p, re_, _P_V):
                h = 2
                cs = p + 18
            elif c0 == 102 and _match(buf, p, re_, _P_C):
                h = 3
                cs = p + 17
        if h > 0:
            seen_h = seen1 if h == 1 else (seen2 if h == 2 else seen3)
            if seen_h:
                mask |= _codes.BIT_DUPLICATE_SECTION
            elif h < max_rank:
                mask |= _codes.BIT_SECTION_ORDER
            active = 0
            if not seen_h and h != 2:
                active = h
            if h == 1:
                seen1 = True
            elif h == 2:
                seen2 = True
            else:
                seen3 = True
            if h > max_rank:
                max_rank = h
            section = h
        # the line's content [cs, le): q is its first non-blank byte (q == le: blank)
        q = _skip_ws(buf, cs, re_)
        t = q
        if section == 2:
            # a step: arrows before the first <bbox>, then </bbox>, then a second <bbox>
            n_arr = 0
            last_end = cs
            bb = -1
            close = -1
            extra = False
            while t < re_:
                c = buf[t]
                if c == 10:
                    break
                if c == 60:
                    tag = _answer_tag(buf, t, re_)
                    if tag == 1:
                        body_end = t
                        break
                    if tag == 2:
                        n_close += 1
                    elif bb < 0:
                        if _match(buf, t, re_, _P_BBOX):
                            bb = t
                    elif close < 0:
                        if _match(buf, t, re_, _P_CBOX):
                            close = t
                    elif not extra and _match(buf, t, re_, _P_BBOX):
                        extra = True
                elif bb < 0:
                    if c == 45:
                        if t + 1 < re_ and buf[t + 1] == 62:
                            n_arr += 1
                            last_end = t + 2
                            t += 2
                            continue
                    elif c == 0x2192:  # '→' in a code-point buffer
                        n_arr += 1
                        last_end = t + 1
                    elif (  # '→' in UTF-8
                        narrow
                        and c == 0xE2
                        and t + 2 < re_
                        and buf[t + 1] == 0x86
                        and buf[t + 2] == 0x92
                    ):
                        n_arr += 1
                        last_end = t + 3
                        t += 3
                        continue
                t += 1
            le = t
            if q < le:
                seg_end = bb if bb >= 0 else le
                n_aus, m = _scan_aus(buf, rs, last_end, seg_end, aus, 0, True)
                mask |= m
                if bb >= 0:
                    n_boxed += 1
                    if n_arr < 2 or not _match(buf, q, re_, _P_INSPECT):
                        mask |= _codes.BIT_MALFORMED_STEP
                    if close < 0:
                        mask |= _codes.BIT_UNCLOSED_BBOX
                    else:
                        st = _parse_box(buf, bb + 6, close, vals)
                        if extra:
                            mask |= _codes.BIT_EXTRA_BBOX
                        if st != _BOX_OK:
                            mask |= 1 << st
                        else:
                            n_emit = n_aus if n_aus > 0 else 1
                            for u in range(n_emit):
                                if total >= _MAX_PAIRS:
                                    mask |= _codes.BIT_TOO_MANY_PAIRS
                                    break
                                if total < K:
                                    out_au[total] = aus[u] if n_aus > 0 else 0
                                    for d in range(4):
                                        out_box[total, d] = np.float32(vals[d])
                                total += 1
        else:
            while t < re_:
                c = buf[t]
                if c == 10:
                    break
                if c == 60:
                    tag = _answer_tag(buf, t, re_)
                    if tag == 1:
                        body_end = t
                        break
                    if tag == 2:
                        n_close += 1
                t += 1
            le = t
            if section == 1:
                if active == 1 and q < le:
                    g_nonempty = True
            elif section == 3:
                if active == 3 and q < le:
                    c_nonempty = True
                _, m = _scan_aus(buf, rs, cs, le, aus, 0, False)
                mask |= m
        if body_end >= 0 or le >= re_:
            break
        ls = le + 1

    if not seen1:
        mask |= _codes.BIT_MISSING_GLOBAL_ANALYSIS
    elif not g_nonempty:
        mask |= _codes.BIT_EMPTY_SECTION
    if not seen2:
        mask |= _codes.BIT_MISSING_VERIFICATION_LOOP
    elif n_boxed == 0:
        mask |= _codes.BIT_NO_BOXED_STEP
    if not seen3:
        mask |= _codes.BIT_MISSING_CONCLUSION
    elif not c_nonempty:
        mask |= _codes.BIT_EMPTY_SECTION

    # the answer tags after the body (those before it were counted on the way)
    n_open = 0
    o1 = -1
    o2 = -1
    c1 = -1
    i = body_end if body_end >= 0 else re_
    while i < re_:
        if buf[i] == 60:
            tag = _answer_tag(buf, i, re_)
            if tag == 1:
                n_open += 1
                if o1 < 0:
                    o1 = i
                elif o2 < 0:
                    o2 = i
                i += 8
                continue
            if tag == 2:
                n_close += 1
                if c1 < 0:
                    c1 = i
                i += 9
                continue
        i += 1

    # the answer
    answer_id = -1
    a = -1
    b = -1
    if o1 < 0:
        mask |= _codes.BIT_MISSING_ANSWER
    elif n_open >= 2:
        if c1 < 0 or o2 < c1:
            mask |= _codes.BIT_NESTED_ANSWER
        else:
            mask |= _codes.BIT_DUPLICATE_ANSWER
    elif c1 < 0:
        mask |= _codes.BIT_UNCLOSED_ANSWER
    elif n_close >= 2:
        mask |= _codes.BIT_DUPLICATE_ANSWER
    else:
        a = o1 + 8
        b = c1
        answer_id = _lookup_answer(buf, a, b, keys, key_len, key_id)
        if answer_id == -1:
            mask |= _codes.BIT_ANSWER_NOT_IN_LABELS
    n_pairs = total if total < K else K
    return n_pairs, answer_id, a, b, mask


@njit(cache=NUMBA_CACHE)
def _scan_one(buf, offsets, r, keys, key_len, key_id, out_au, out_box, n_pairs, answer, span, mask):
    aus = np.empty(_MAX_AUS, dtype=np.int32)
    vals = np.empty(4, dtype=np.float64)
    n, aid, a, b, m = _scan_row(
        buf, offsets[r], offsets[r + 1], keys, key_len, key_id, out_au[r], out_box[r], aus, vals
    )
    n_pairs[r] = n
    answer[r] = aid
    span[r, 0] = a
    span[r, 1] = b
    mask[r] = m


# Two functions (not one function compiled twice) so that their on-disk caches stay apart.
@njit(cache=NUMBA_CACHE)
def _scan_batch_serial(
    buf, offsets, keys, key_len, key_id, out_au, out_box, n_pairs, answer, span, mask
):
    for r in range(offsets.shape[0] - 1):
        _scan_one(
            buf, offsets, r, keys, key_len, key_id, out_au, out_box, n_pairs, answer, span, mask
        )


@njit(cache=NUMBA_CACHE, parallel=True)
def _scan_batch_parallel(
    buf, offsets, keys, key_len, key_id, out_au, out_box, n_pairs, answer, span, mask
):
    for r in prange(offsets.shape[0] - 1):
        _scan_one(
            buf, offsets, r, keys, key_len, key_id, out_au, out_box, n_pairs, answer, span, mask
        )


PARALLEL_MIN_BYTES = 1 << 21
"""Buffers shorter than this (2 Mi elements: bytes, or code points for strings) are scanned on
one thread: at B=512 x 600 characters a single thread takes ~0.8 ms, and thread start-up and
contention on a busy machine cost more than they save (``bench/bench_parse.py`` and
``bench/bench_reward_e2e.py`` measure both at that size)."""


def scan_batch(buf, offsets, keys, key_len, key_id, out_au, out_box, n_pairs, answer, span, mask):
    import numba

    fn = _scan_batch_serial
    if buf.shape[0] >= PARALLEL_MIN_BYTES and numba.get_num_threads() > 1:
        fn = _scan_batch_parallel
    fn(buf, offsets, keys, key_len, key_id, out_au, out_box, n_pairs, answer, span, mask)
