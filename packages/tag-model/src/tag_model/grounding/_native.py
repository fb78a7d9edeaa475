"""Native box syntaxes of the backbone families, read as TAG's ``<bbox>[x1,y1,x2,y2]</bbox>``.

InternVL writes a box as ``<box>[[x1, y1, x2, y2]]</box>`` (0-1000 relative; see
``tag_model.backbones``). Before any scanning, both parsers rewrite that syntax into TAG's
with a **same-length** substitution:

    ``<box>[[``  (7 characters) -> ``<bbox>[``  (7 characters)
    ``]]</box>`` (8 characters) -> ``]</bbox>`` (8 characters)

The tags match ASCII case-insensitively, like every tag of the grammar. Because the lengths
are equal, character offsets (step spans, error positions) and the packed buffers' row
offsets are unchanged, and :func:`~tag_model.grounding.parse_trace` (on the text) and
:func:`~tag_model.grounding.parse_batch` (on the packed code-point or UTF-8 buffer, NumPy on
the CPU and torch on CUDA) apply the same rewrite, so they still agree exactly. Neither
pattern can overlap itself or the other, so the rewrite is a single vectorised pass.
``<bbox>[[`` and ``]]</bbox>`` are *not* rewritten (they do not contain the patterns), and a
native box holding two boxes (``<box>[[..], [..]]</box>``) stays a ``BAD_BOX``: a TAG step
has one box. Other families (LLaVA-OneVision, Gemma 3, SmolVLM) have no native grounding
format and the Qwen families are prompted in TAG's syntax, so nothing else is rewritten.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = ["NATIVE_BOX_REWRITES", "normalise_native_boxes", "normalise_native_text"]

#: ``(native, tag)`` pairs of equal length, rewritten before scanning.
NATIVE_BOX_REWRITES: tuple[tuple[str, str], ...] = (
    ("<box>[[", "<bbox>["),
    ("]]</box>", "]</bbox>"),
)
for _a, _b in NATIVE_BOX_REWRITES:
    assert len(_a) == len(_b), (_a, _b)

_TEXT_RE = re.compile(r"<box>\[\[|\]\]</box>", re.IGNORECASE | re.ASCII)
_REPL = {a: b for a, b in NATIVE_BOX_REWRITES}


def normalise_native_text(text: str) -> str:
    """``text`` with InternVL's ``<box>[[...]]</box>`` rewritten to ``<bbox>[...]</bbox>``.

    The result has the same length as ``text``.

    >>> normalise_native_text("AU6 <box>[[156, 208, 285, 314]]</box>")
    'AU6 <bbox>[156, 208, 285, 314]</bbox>'
    """
    if "[[" not in text and "]]" not in text:  # the common case: one C-level scan
        return text
    return _TEXT_RE.sub(lambda m: _REPL[m.group(0).lower()], text)


def _fold(x: Any) -> Any:
    """ASCII upper-case letters lowered, element-wise (NumPy or torch integer arrays)."""
    upper = (x >= 65) & (x <= 90)
    return x + upper * 32


def normalise_native_boxes(buf: Any) -> Any:
    """Apply :func:`normalise_native_text`'s rewrite in place to a packed buffer.

    Args:
        buf: the packed completions, one code point (``uint32``) or one UTF-8 byte
            (``uint8``) per element, as a NumPy array or a torch tensor (any device). Every
            pattern is ASCII, so code points and UTF-8 bytes are matched alike.

    Returns:
        ``buf`` itself (rewritten in place; a read-only NumPy buffer is copied first).
    """
    is_np = isinstance(buf, np.ndarray)
    n = int(buf.shape[0])
    if n < 7:
        return buf
    pair = ((buf[:-1] == 91) & (buf[1:] == 91)) | ((buf[:-1] == 93) & (buf[1:] == 93))
    if not bool(pair.any()):  # no "[[" or "]]": nothing to rewrite (the common case)
        return buf
    if is_np and not buf.flags.writeable:
        buf = buf.copy()
    folded = _fold(buf.astype(np.int64) if is_np else buf.to(_torch_int()))
    hits = []
    for native, tag in NATIVE_BOX_REWRITES:
        m = len(native)
        if n < m:
            continue
        match = None
        for k, ch in enumerate(native.lower().encode("ascii")):
            eq = folded[k : n - m + 1 + k] == ch
            match = eq if match is None else match & eq
        starts = np.nonzero(match)[0] if is_np else match.nonzero().flatten()
        if starts.shape[0]:
            hits.append((starts, tag))
    for starts, tag in hits:  # disjoint matches: the order does not matter
        codes = tag.encode("ascii")
        for k, ch in enumerate(codes):
            buf[starts + k] = ch
    return buf


def _torch_int() -> Any:
    import torch

    return torch.int32
