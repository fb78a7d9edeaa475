"""Token ids -> bytes: the :class:`TokenBytes` table of a tokenizer and the compiled gathers
that turn ``[B, T]`` token ids into one packed byte buffer for the scanners."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from ._codes import NUMBA_CACHE

__all__ = ["TokenBytes", "gather_tokens", "row_bytes", "token_bytes"]


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


@njit(cache=NUMBA_CACHE)
def gather_tokens(ids, lengths, tok_data, tok_off, row_off, out):
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


@njit(cache=NUMBA_CACHE)
def row_bytes(ids, lengths, tok_off, out):
    B, _T = ids.shape
    V = tok_off.shape[0] - 1
    for r in range(B):
        n = 0
        for t in range(lengths[r]):
            tid = ids[r, t]
            if 0 <= tid < V:
                n += tok_off[tid + 1] - tok_off[tid]
        out[r] = n
