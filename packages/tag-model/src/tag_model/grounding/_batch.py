"""``parse_batch``: the compiled batch parser (Numba on the CPU, Triton for CUDA token ids).

Completions are packed into one buffer with row offsets and scanned by the Numba scanner of
:mod:`._scanner`, one row per iteration (``prange`` over rows for buffers of 2 MiB or more;
smaller batches run on one thread). Strings are packed as code points (``uint32``,
:func:`_pack_codepoints`: one widening copy, no UTF-8 encoding); token ids as UTF-8 bytes
(``uint8``, through the :class:`~._tokens.TokenBytes` table). CUDA token ids go to the Triton
kernel of :mod:`._triton` instead.

The only Python work per row is for answers whose normalised text is not a known spelling of a
label (say ``"joyful"`` or non-ASCII text): those go through
:func:`tag_model.au.canonical_label`, memoised per call, exactly as :func:`parse_trace` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tag_model.au import LabelSpace

from ._codes import (
    ANSWER_FALLBACK,
    BIT_ANSWER_NOT_IN_LABELS,
    MAX_PAIRS,
    LabelTable,
    ParsedBatch,
    label_table,
)
from ._completions import completion_texts
from ._native import normalise_native_boxes, normalise_native_text
from ._scanner import scan_batch
from ._tokens import TokenBytes, gather_tokens, row_bytes, token_bytes

__all__ = ["parse_batch", "scan_packed"]


def _lowest_bit(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.int64)
    low = m & -m
    out = np.zeros(m.shape, dtype=np.int32)
    nz = low != 0
    out[nz] = np.log2(low[nz].astype(np.float64)).astype(np.int32)
    return out


def _as_texts(items: Sequence[Any]) -> list[str]:
    """Completions as strings, by the one rule of :func:`completion_text`, with native box
    syntax rewritten to TAG's (same length; :mod:`._native`)."""
    return [normalise_native_text(t) for t in completion_texts(items)]


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
    n_bytes = np.empty(B, dtype=np.int64)
    row_bytes(arr, ln, table.offsets, n_bytes)
    offsets = np.zeros(B + 1, dtype=np.int64)
    np.cumsum(n_bytes, out=offsets[1:])
    buf = np.empty(int(offsets[-1]), dtype=np.uint8)
    gather_tokens(arr, ln, table.data, table.offsets, offsets, buf)
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
        scan_batch(
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
    rows = np.nonzero(answer == ANSWER_FALLBACK)[0]
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
            mask[r] |= BIT_ANSWER_NOT_IN_LABELS


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

    Native box syntax (InternVL's ``<box>[[x1, y1, x2, y2]]</box>``) is read as TAG's
    ``<bbox>`` by the same same-length rewrite as :func:`parse_trace` (see :mod:`._native`).

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
    >>> from tag_model.grounding import ParseReason
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
    buf = normalise_native_boxes(buf)  # InternVL's <box>[[..]]</box>, same length
    return scan_packed(buf, offsets, table, max_pairs, errors)
