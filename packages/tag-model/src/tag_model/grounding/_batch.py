"""``parse_batch``: the compiled batch parser (Numba on the CPU, Triton for CUDA token ids).

Completions are packed into one buffer with row offsets and scanned by :func:`_scan_batch`, a
Numba ``njit`` kernel, one row per iteration (``prange`` over rows with ``parallel=True`` for
buffers of 2 MiB or more; smaller batches run on one thread). Strings are packed as code points
(``uint32``, :func:`_pack_codepoints`: one widening copy, no UTF-8 encoding); token ids as
UTF-8 bytes (``uint8``). The same kernel compiles for both; only the arrow differs (one code
point ``U+2192`` or the bytes ``E2 86 92``). Every other pattern is ASCII, so a code-point
scan and a byte scan see the same text.

The scanner implements the grammar of :mod:`._parse` and returns exactly what
:func:`parse_trace` returns for every field it has; tests check this on a fuzz corpus. It makes
one walk per line of the body: a line ends at ``\n`` or at the first ``<answer>`` (the body's
end); the walk matches the header at the line start, then for a step counts arrows, finds the
first ``<bbox>``, its ``</bbox>`` and any later ``<bbox>``, and counts the ``</answer>`` tags
it passes. Then only the AU tail of a step, its box and the conclusion's AU mentions are read
again, and the answer tags after the body. Patterns are matched bounded by the row end rather
than the line end: none contains ``\n`` and each has ``<`` only at index 0, so no match can
straddle a line end or the body's end, and the results equal the bounded searches of
:mod:`._parse`. The Triton twin in :mod:`._triton` keeps the earlier multi-pass layout (answer
tags over the whole row, then lines, then a search per pattern); both give the same results.

The only Python work per row is for answers whose normalised text is not a known spelling of a
label (say ``"joyful"`` or non-ASCII text): those go through
:func:`tag_model.au.canonical_label`, memoised per call, exactly as :func:`parse_trace` does.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

from tag_model.au import LabelSpace

from ._codes import (
    COORD_LIMIT,
    KNOWN_AU_TABLE,
    MAX_AU_DIGITS,
    MAX_AUS_PER_STEP,
    MAX_NUMBER_DIGITS,
    MAX_PAIRS,
    POW10,
    LabelTable,
    ParseReason,
    label_table,
)

__all__ = ["ParsedBatch", "TokenBytes", "parse_batch", "token_bytes"]

_CACHE = os.environ.get("TAG_NUMBA_CACHE", "1") != "0"


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

_R_MISSING_G = 1 << int(ParseReason.MISSING_GLOBAL_ANALYSIS)
_R_MISSING_V = 1 << int(ParseReason.MISSING_VERIFICATION_LOOP)
_R_MISSING_C = 1 << int(ParseReason.MISSING_CONCLUSION)
_R_MISSING_A = 1 << int(ParseReason.MISSING_ANSWER)
_R_UNCLOSED_A = 1 << int(ParseReason.UNCLOSED_ANSWER)
_R_NESTED_A = 1 << int(ParseReason.NESTED_ANSWER)
_R_DUP_A = 1 << int(ParseReason.DUPLICATE_ANSWER)
_R_DUP_S = 1 << int(ParseReason.DUPLICATE_SECTION)
_R_ORDER = 1 << int(ParseReason.SECTION_ORDER)
_R_EMPTY = 1 << int(ParseReason.EMPTY_SECTION)
_R_NO_BOX = 1 << int(ParseReason.NO_BOXED_STEP)
_R_MALFORMED = 1 << int(ParseReason.MALFORMED_STEP)
_R_UNCLOSED_B = 1 << int(ParseReason.UNCLOSED_BBOX)
_R_EXTRA_B = 1 << int(ParseReason.EXTRA_BBOX)
_R_BAD_AU = 1 << int(ParseReason.BAD_AU)
_R_UNKNOWN_AU = 1 << int(ParseReason.UNKNOWN_AU)
_R_MANY_AUS = 1 << int(ParseReason.TOO_MANY_AUS)
_R_MANY_PAIRS = 1 << int(ParseReason.TOO_MANY_PAIRS)
_R_NOT_LABEL = 1 << int(ParseReason.ANSWER_NOT_IN_LABELS)
_BOX_OK = 0
_BOX_BAD = int(ParseReason.BAD_BOX)
_BOX_HUGE = int(ParseReason.HUGE_COORD)
_BOX_INV = int(ParseReason.INVERTED_BOX)
_MAX_AUS = MAX_AUS_PER_STEP
_MAX_PAIRS = MAX_PAIRS
_MAX_DIG = MAX_NUMBER_DIGITS
_MAX_AU_DIG = MAX_AU_DIGITS
_LIMIT = COORD_LIMIT
_ANSWER_FALLBACK = -2


# ----------------------------------------------------------------------------- byte helpers
@njit(cache=_CACHE, inline="always")
def _lc(c: int) -> int:
    return c + 32 if 65 <= c <= 90 else c


@njit(cache=_CACHE, inline="always")
def _is_ws(c: int) -> bool:  # line-internal whitespace: space, \t, \r, \f, \v
    return c == 32 or c == 9 or c == 13 or c == 12 or c == 11


@njit(cache=_CACHE, inline="always")
def _is_alnum(c: int) -> bool:
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)


@njit(cache=_CACHE)
def _match(buf, i, end, pat):
    n = pat.shape[0]
    if i + n > end:
        return False
    for k in range(n):  # noqa: SIM110 - numba has no generators in all()
        if _lc(buf[i + k]) != pat[k]:
            return False
    return True


@njit(cache=_CACHE, inline="always")
def _answer_tag(buf, i, end):
    """At ``buf[i] == '<'``: 1 for ``<answer>``, 2 for ``</answer>``, else 0."""
    if _match(buf, i, end, _P_OPEN):
        return 1
    if _match(buf, i, end, _P_CLOSE):
        return 2
    return 0


@njit(cache=_CACHE)
def _find(buf, a, b, pat):
    n = pat.shape[0]
    first = pat[0]
    i = a
    while i + n <= b:
        if _lc(buf[i]) == first and _match(buf, i, b, pat):
            return i
        i += 1
    return -1


@njit(cache=_CACHE)
def _skip_ws(buf, i, b):
    while i < b and _is_ws(buf[i]):
        i += 1
    return i


@njit(cache=_CACHE)
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
                mask |= _R_BAD_AU
                continue
            if not _KNOWN[v]:
                mask |= _R_UNKNOWN_AU
            if collect:
                dup = False
                for t in range(n_aus):
                    if aus[t] == v:
                        dup = True
                if not dup:
                    if n_aus >= _MAX_AUS:
                        mask |= _R_MANY_AUS
                    else:
                        aus[n_aus] = v
                        n_aus += 1
            continue
        i += 1
    return n_aus, mask


@njit(cache=_CACHE)
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


@njit(cache=_CACHE)
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
@njit(cache=_CACHE)
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
                mask |= _R_DUP_S
            elif h < max_rank:
                mask |= _R_ORDER
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
                        mask |= _R_MALFORMED
                    if close < 0:
                        mask |= _R_UNCLOSED_B
                    else:
                        st = _parse_box(buf, bb + 6, close, vals)
                        if extra:
                            mask |= _R_EXTRA_B
                        if st != _BOX_OK:
                            mask |= 1 << st
                        else:
                            n_emit = n_aus if n_aus > 0 else 1
                            for u in range(n_emit):
                                if total >= _MAX_PAIRS:
                                    mask |= _R_MANY_PAIRS
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
        mask |= _R_MISSING_G
    elif not g_nonempty:
        mask |= _R_EMPTY
    if not seen2:
        mask |= _R_MISSING_V
    elif n_boxed == 0:
        mask |= _R_NO_BOX
    if not seen3:
        mask |= _R_MISSING_C
    elif not c_nonempty:
        mask |= _R_EMPTY

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
        mask |= _R_MISSING_A
    elif n_open >= 2:
        if c1 < 0 or o2 < c1:
            mask |= _R_NESTED_A
        else:
            mask |= _R_DUP_A
    elif c1 < 0:
        mask |= _R_UNCLOSED_A
    elif n_close >= 2:
        mask |= _R_DUP_A
    else:
        a = o1 + 8
        b = c1
        answer_id = _lookup_answer(buf, a, b, keys, key_len, key_id)
        if answer_id == -1:
            mask |= _R_NOT_LABEL
    n_pairs = total if total < K else K
    return n_pairs, answer_id, a, b, mask


@njit(cache=_CACHE)
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
@njit(cache=_CACHE)
def _scan_batch_serial(
    buf, offsets, keys, key_len, key_id, out_au, out_box, n_pairs, answer, span, mask
):
    for r in range(offsets.shape[0] - 1):
        _scan_one(
            buf, offsets, r, keys, key_len, key_id, out_au, out_box, n_pairs, answer, span, mask
        )


@njit(cache=_CACHE, parallel=True)
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
contention on a busy machine cost more than they save (measured 1.6 ms serial vs 12-20 ms
parallel on a loaded 2-core box, before the merged walk)."""


def _scan_batch(buf, offsets, keys, key_len, key_id, out_au, out_box, n_pairs, answer, span, mask):
    import numba

    fn = _scan_batch_serial
    if buf.shape[0] >= PARALLEL_MIN_BYTES and numba.get_num_threads() > 1:
        fn = _scan_batch_parallel
    fn(buf, offsets, keys, key_len, key_id, out_au, out_box, n_pairs, answer, span, mask)


@njit(cache=_CACHE)
def _gather_tokens(ids, lengths, tok_data, tok_off, row_off, out):
    B, _T = ids.shape
    V = tok_off.shape[0] - 1
    for r in range(B):
        o = row_off[r]
        for t in range(lengths[r]):
            tid = ids[r, t]
            if tid < 0 or tid >= V:
                continue
            for j in range(tok_off[tid], tok_off[tid + 1]):
                out[o] = tok_data[j]
                o += 1


@njit(cache=_CACHE)
def _row_bytes(ids, lengths, tok_off, out):
    B, _T = ids.shape
    V = tok_off.shape[0] - 1
    for r in range(B):
        n = 0
        for t in range(lengths[r]):
            tid = ids[r, t]
            if 0 <= tid < V:
                n += tok_off[tid + 1] - tok_off[tid]
        out[r] = n


# ----------------------------------------------------------------------------- token tables
def _byte_level_decoder() -> dict[str, int]:
    """The inverse of the GPT-2 byte-level alphabet (printable bytes map to themselves; the
    other 68 bytes map to U+0100.. in byte order)."""
    keep = list(range(ord("!"), ord("~") + 1))
    keep += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    out = {chr(b): b for b in keep}
    extra = 0
    for b in range(256):
        if b not in out.values():
            out[chr(256 + extra)] = b
            extra += 1
    return out


@dataclass(frozen=True)
class TokenBytes:
    """A token-id -> UTF-8 bytes table.

    Attributes:
        data: ``uint8[N]`` the bytes of every token, concatenated.
        offsets: ``int64[V + 1]``; token ``t`` is ``data[offsets[t]:offsets[t + 1]]``. Special
            tokens (and the pad id) are empty, as in ``decode(..., skip_special_tokens=True)``.
    """

    data: np.ndarray
    offsets: np.ndarray

    @property
    def vocab_size(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text the batch parser sees for ``ids``: bytes joined, UTF-8 with replacement."""
        ids = np.asarray(ids).reshape(-1)
        parts = [
            self.data[self.offsets[t] : self.offsets[t + 1]].tobytes()
            for t in ids.tolist()
            if 0 <= t < self.vocab_size
        ]
        return b"".join(parts).decode("utf-8", "replace")


_TB_CACHE: weakref.WeakKeyDictionary[Any, tuple[int, TokenBytes]] = weakref.WeakKeyDictionary()


def token_bytes(tokenizer: Any) -> TokenBytes:
    """The :class:`TokenBytes` table of a Hugging Face tokenizer (built once per tokenizer).

    Byte-level BPE vocabularies (Qwen, GPT-2) map each token's characters back to bytes;
    SentencePiece-style vocabularies map ``▁`` to a space and ``<0xNN>`` to byte ``NN``; other
    tokenizers fall back to ``convert_tokens_to_string`` per token.
    """
    if isinstance(tokenizer, TokenBytes):
        return tokenizer
    try:
        hit = _TB_CACHE.get(tokenizer)
    except TypeError:  # not weak-referenceable
        return _build_token_bytes(tokenizer)
    if hit is not None and hit[0] == len(tokenizer):
        return hit[1]
    tb = _build_token_bytes(tokenizer)
    _TB_CACHE[tokenizer] = (len(tokenizer), tb)
    return tb


def _build_token_bytes(tokenizer: Any) -> TokenBytes:
    vocab_size = len(tokenizer)
    toks = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    backend = getattr(tokenizer, "backend_tokenizer", None)
    dec_name = type(getattr(backend, "decoder", None)).__name__ if backend is not None else ""
    if dec_name == "NoneType" and backend is not None:
        dec_name = str(backend.decoder)
    byte_level = "ByteLevel" in dec_name
    bl = _byte_level_decoder()
    chunks: list[bytes] = []
    for tid, tok in enumerate(toks):
        if tid in special or tok is None:
            chunks.append(b"")
            continue
        if byte_level and all(ch in bl for ch in tok):
            chunks.append(bytes(bl[ch] for ch in tok))
        elif len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
            chunks.append(bytes([int(tok[3:5], 16)]))
        elif not byte_level and "▁" in tok:
            chunks.append(tok.replace("▁", " ").encode("utf-8"))
        else:
            chunks.append(tokenizer.convert_tokens_to_string([tok]).encode("utf-8"))
    lens = np.array([len(c) for c in chunks], dtype=np.int64)
    offsets = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    data = np.frombuffer(b"".join(chunks), dtype=np.uint8).copy()
    return TokenBytes(data, offsets)


# ----------------------------------------------------------------------------- the public API
@dataclass
class ParsedBatch:
    """Padded parse results for ``B`` completions (NumPy arrays, or torch on the input's
    device for CUDA token ids).

    Attributes:
        pred_au: ``int32[B, K]`` AU number of each (AU, box) pair; 0 = box with no AU named;
            -1 = padding.
        pred_boxes: ``float32[B, K, 4]`` ``xyxy`` boxes in the model's coordinate space (0 in
            padding).
        n_pairs: ``int32[B]`` pairs kept (``min(len(parse_trace(x).pairs()), K)``).
        answer_id: ``int32[B]`` index of the answer in ``labels``, -1 when none.
        format_ok: ``bool[B]``, ``parse_trace(x).format_ok``.
        reason: ``int32[B]`` the :class:`ParseReason` of each row (``parse_trace(x).reason``).
        reason_mask: ``int32[B]`` bit ``c`` set when reason ``c`` occurred.
        labels: the label set's canonical names (``answer_id`` indexes it).
    """

    pred_au: Any
    pred_boxes: Any
    n_pairs: Any
    answer_id: Any
    format_ok: Any
    reason: Any
    reason_mask: Any
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.n_pairs.shape[0])


def _lowest_bit(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.int64)
    low = m & -m
    out = np.zeros(m.shape, dtype=np.int32)
    nz = low != 0
    out[nz] = np.log2(low[nz].astype(np.float64)).astype(np.int32)
    return out


def _as_texts(items: Sequence[Any]) -> list[str]:
    """Completions as strings, by the one rule of :func:`completion_text`."""
    from ._completions import completion_texts

    return completion_texts(items)


def _pack_strings(items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, str]:
    texts = _as_texts(items)
    parts = [t.encode("utf-8", "surrogatepass") for t in texts]  # each text encoded once
    lens = np.zeros(len(parts) + 1, dtype=np.int64)
    lens[1:] = [len(p) for p in parts]
    raw = b"".join(parts)
    buf = np.frombuffer(raw, dtype=np.uint8)
    offsets = np.cumsum(lens)
    assert offsets[-1] == buf.shape[0]
    return buf, offsets, "surrogatepass"


_MAX_UCS4 = 1 << 27  # code points in one NumPy str_ (512 MiB); longer batches pack as UTF-8


def _pack_codepoints(items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """The texts as one buffer of code points with row offsets ``int64[B + 1]``.

    The buffer is ``uint32[N]``: NumPy stores ``str_`` as UCS-4, so ``np.array(joined)`` is one
    widening copy of the joined text (no UTF-8 encoding, which costs ~5x more), and a row's
    length is its ``len``. Lone surrogates stay as their code points, as in ``parse_trace``.
    All-ASCII text packs as ``uint8[N]`` (the same code points, one byte each), and batches of
    more than ``_MAX_UCS4`` code points as UTF-8 bytes (:func:`_pack_strings`).
    """
    texts = _as_texts(items)
    n = len(texts)
    offsets = np.zeros(n + 1, dtype=np.int64)
    if n:
        np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=n), out=offsets[1:])
    joined = "".join(texts)
    if not joined:
        return np.zeros(0, dtype=np.uint32), offsets
    if joined.isascii():  # O(1) in CPython; one byte per code point, a plain copy
        return np.frombuffer(joined.encode("ascii"), dtype=np.uint8), offsets
    if len(joined) > _MAX_UCS4:  # keep NumPy's str_ item small: UTF-8 bytes instead
        buf, offsets, _ = _pack_strings(texts)
        return buf, offsets
    buf = np.array(joined).reshape(1).view(np.uint32)
    if buf.shape[0] != offsets[-1]:  # pragma: no cover - NumPy keeps every code point
        raise RuntimeError(f"parse_batch: packed {buf.shape[0]} code points, want {offsets[-1]}")
    return buf, offsets


def _pack_tokens(ids: Any, table: TokenBytes, pad_id: int | None, lengths: Any):
    arr = np.ascontiguousarray(np.asarray(ids), dtype=np.int64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"parse_batch: token ids must be [B, T], got shape {arr.shape}")
    if pad_id is not None:
        arr = np.where(arr == pad_id, -1, arr)
    B, T = arr.shape
    if lengths is None:
        ln = np.full(B, T, dtype=np.int64)
    else:
        ln = np.clip(np.asarray(lengths, dtype=np.int64).reshape(B), 0, T)
    row_bytes = np.empty(B, dtype=np.int64)
    _row_bytes(arr, ln, table.offsets, row_bytes)
    offsets = np.zeros(B + 1, dtype=np.int64)
    np.cumsum(row_bytes, out=offsets[1:])
    buf = np.empty(int(offsets[-1]), dtype=np.uint8)
    _gather_tokens(arr, ln, table.data, table.offsets, offsets, buf)
    return buf, offsets, "replace"


def scan_packed(
    buf: np.ndarray,
    offsets: np.ndarray,
    table: LabelTable,
    max_pairs: int,
    errors: str,
) -> ParsedBatch:
    """Run the Numba scanner on a packed buffer: UTF-8 bytes ``uint8[N]`` or code points
    ``uint32[N]``, with row offsets ``int64[B + 1]``."""
    B = offsets.shape[0] - 1
    K = int(max_pairs)
    pred_au = np.full((B, K), -1, dtype=np.int32)
    pred_boxes = np.zeros((B, K, 4), dtype=np.float32)
    n_pairs = np.zeros(B, dtype=np.int32)
    answer = np.full(B, -1, dtype=np.int32)
    span = np.full((B, 2), -1, dtype=np.int64)
    mask = np.zeros(B, dtype=np.int32)
    if B:
        _scan_batch(
            buf, offsets, table.keys, table.key_len, table.key_id,
            pred_au, pred_boxes, n_pairs, answer, span, mask,
        )  # fmt: skip
    finish_answers(buf, span, answer, mask, table, errors)
    return ParsedBatch(
        pred_au=pred_au,
        pred_boxes=pred_boxes,
        n_pairs=n_pairs,
        answer_id=answer,
        format_ok=mask == 0,
        reason=_lowest_bit(mask),
        reason_mask=mask,
        labels=table.names,
    )


def finish_answers(
    buf: np.ndarray,
    span: np.ndarray,
    answer: np.ndarray,
    mask: np.ndarray,
    table: LabelTable,
    errors: str,
) -> None:
    """Resolve rows whose answer the key table could not (``answer == -2``) in Python."""
    rows = np.nonzero(answer == _ANSWER_FALLBACK)[0]
    memo: dict[bytes, int] = {}
    wide = buf.dtype != np.uint8
    for r in rows.tolist():
        raw = buf[span[r, 0] : span[r, 1]].tobytes()
        aid = memo.get(raw)
        if aid is None:
            if wide:  # code points
                text = "".join(map(chr, buf[span[r, 0] : span[r, 1]].tolist()))
            else:
                text = raw.decode("utf-8", errors)
            aid = memo[raw] = table.resolve(text)
        answer[r] = aid
        if aid < 0:
            mask[r] |= _R_NOT_LABEL


def parse_batch(
    completions: Sequence[Any] | Any,
    *,
    labels: LabelSpace | Sequence[str] | str | None = None,
    max_pairs: int = MAX_PAIRS,
    tokenizer: Any = None,
    pad_id: int | None = None,
    lengths: Any = None,
) -> ParsedBatch:
    """Parse a batch of completions into padded arrays for ``au_grounding_reward``.

    Row ``i`` agrees exactly with ``parse_trace(text_i, labels=labels)``: ``pred_au[i, :n]``
    and ``pred_boxes[i, :n]`` are its ``pairs()[:max_pairs]`` (boxes as float32), and
    ``answer_id``, ``format_ok``, ``reason`` are its fields.

    Args:
        completions: a list of strings (or conversational completions, or bytes), or token ids
            ``[B, T]`` (NumPy array, torch tensor, or nested lists) with ``tokenizer``. For
            token ids, ``text_i`` is ``token_bytes(tokenizer).decode(ids[i])``. CUDA tensors are
            parsed on the GPU by the Triton kernel; results then stay on that device.
        labels: the label set (see :func:`parse_trace`).
        max_pairs: K, the width of the pair arrays. A trace holds at most 64 pairs; rows with
            more than K pairs keep the first K (``format_ok`` is not affected).
        tokenizer: a Hugging Face tokenizer or a :class:`TokenBytes` table, for token ids.
        pad_id: a token id to skip (default: the tokenizer's pad id, if any). Special tokens
            are always skipped.
        lengths: optional ``[B]`` number of valid tokens per row.

    Returns:
        A :class:`ParsedBatch`.

    >>> pb = parse_batch(["Global analysis: smile\\nVerification loop:\\n"
    ...     "Inspect cheeks → raised → AU6 AU12 <bbox>[1,2,30,40]</bbox>\\n"
    ...     "Final conclusion: AU6 + AU12.\\n<answer> happiness </answer>", "garbage"])
    >>> pb.pred_au[:, :3].tolist(), pb.n_pairs.tolist(), pb.answer_id.tolist()
    ([[6, 12, -1], [-1, -1, -1]], [2, 0], [1, -1])
    >>> pb.format_ok.tolist(), [ParseReason(r).name for r in pb.reason]
    ([True, False], ['OK', 'MISSING_GLOBAL_ANALYSIS'])
    """
    if max_pairs < 1:
        raise ValueError(f"parse_batch: max_pairs must be >= 1, got {max_pairs}")
    table = labels if isinstance(labels, LabelTable) else label_table(labels)
    is_tokens = tokenizer is not None or (
        not isinstance(completions, list | tuple) and hasattr(completions, "shape")
    )
    if not is_tokens:
        buf, offsets = _pack_codepoints(list(completions))
        return scan_packed(buf, offsets, table, max_pairs, "surrogatepass")
    if tokenizer is None:
        raise ValueError("parse_batch: token ids need tokenizer= (a tokenizer or TokenBytes)")
    tb = token_bytes(tokenizer)
    if pad_id is None and not isinstance(tokenizer, TokenBytes):
        pad_id = getattr(tokenizer, "pad_token_id", None)
    try:
        import torch

        if isinstance(completions, torch.Tensor) and completions.is_cuda:
            from ._triton import parse_batch_cuda

            return parse_batch_cuda(completions, tb, table, max_pairs, pad_id, lengths)
        if isinstance(completions, torch.Tensor):
            completions = completions.detach().cpu().numpy()
        if isinstance(lengths, torch.Tensor):
            lengths = lengths.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    buf, offsets, errors = _pack_tokens(completions, tb, pad_id, lengths)
    return scan_packed(buf, offsets, table, max_pairs, errors)
