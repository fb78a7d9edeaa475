"""Shared definitions of the trace grammar: reason codes, limits, label and AU tables.

Every parser (the Python reference in ``_parse.py``, the Numba scanner in ``_scanner.py`` and
the Triton kernel in ``_triton.py``) reads its constants from here, so that they cannot drift.
The compiled scanners read the reason bits as ``_codes.BIT_<REASON>`` (module attributes are
compile-time constants for Numba and Triton alike). :class:`ParsedBatch`, what both batch
scanners return, lives here too.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from tag_model.au import (
    AU_CATALOGUE,
    CANONICAL_LABELS,
    LABEL_SYNONYMS,
    LabelSpace,
    canonical_label,
    get_label_space,
)

__all__ = [
    "ANSWER_FALLBACK",
    "AU_TABLE_SIZE",
    "COORD_LIMIT",
    "KNOWN_AU_TABLE",
    "MAX_AUS_PER_STEP",
    "MAX_AU_DIGITS",
    "MAX_NUMBER_DIGITS",
    "MAX_PAIRS",
    "NUMBA_CACHE",
    "POW10",
    "LabelTable",
    "ParseReason",
    "ParsedBatch",
    "label_table",
]


class ParseReason(enum.IntEnum):
    """Why a trace is not well formed; ``reason`` of a row is the smallest code it has.

    The order is a precedence: structural problems (a missing part) come before problems
    inside a part, so a truncated completion reports the first part it lacks.

    ======  ===========================  ==================================================
    code    name                         meaning
    ======  ===========================  ==================================================
    0       OK                           every rule holds (``format_ok``)
    1       MISSING_GLOBAL_ANALYSIS      no ``Global analysis:`` line
    2       MISSING_VERIFICATION_LOOP    no ``Verification loop:`` line
    3       MISSING_CONCLUSION           no ``Final conclusion:`` line
    4       MISSING_ANSWER               no ``<answer>``
    5       UNCLOSED_ANSWER              one ``<answer>`` and no ``</answer>`` after it
    6       NESTED_ANSWER                a second ``<answer>`` before the first is closed
    7       DUPLICATE_ANSWER             more than one ``<answer>`` or ``</answer>``
    8       DUPLICATE_SECTION            a section header written twice
    9       SECTION_ORDER                headers not in the order G, V, C
    10      EMPTY_SECTION                global analysis or conclusion has no text
    11      NO_BOXED_STEP                no step of the verification loop has ``<bbox>``
    12      MALFORMED_STEP               a boxed step is not ``Inspect … → … → … <bbox>``
    13      UNCLOSED_BBOX                ``<bbox>`` without ``</bbox>`` on its line
    14      EXTRA_BBOX                   a second ``<bbox>`` on one step line
    15      BAD_BOX                      box text is not ``[x1,y1,x2,y2]`` of plain numbers
    16      HUGE_COORD                   a coordinate over 1e6 or with more than 15 digits
    17      INVERTED_BOX                 ``x1 >= x2`` or ``y1 >= y2``
    18      BAD_AU                       an AU number with more than 3 significant digits
    19      UNKNOWN_AU                   an AU number not in ``AU_CATALOGUE``
    20      TOO_MANY_AUS                 more than 16 distinct AUs in one step
    21      TOO_MANY_PAIRS               more than 64 (AU, box) pairs in the trace
    22      ANSWER_NOT_IN_LABELS         the answer is not a label of the label set
    ======  ===========================  ==================================================
    """

    OK = 0
    MISSING_GLOBAL_ANALYSIS = 1
    MISSING_VERIFICATION_LOOP = 2
    MISSING_CONCLUSION = 3
    MISSING_ANSWER = 4
    UNCLOSED_ANSWER = 5
    NESTED_ANSWER = 6
    DUPLICATE_ANSWER = 7
    DUPLICATE_SECTION = 8
    SECTION_ORDER = 9
    EMPTY_SECTION = 10
    NO_BOXED_STEP = 11
    MALFORMED_STEP = 12
    UNCLOSED_BBOX = 13
    EXTRA_BBOX = 14
    BAD_BOX = 15
    HUGE_COORD = 16
    INVERTED_BOX = 17
    BAD_AU = 18
    UNKNOWN_AU = 19
    TOO_MANY_AUS = 20
    TOO_MANY_PAIRS = 21
    ANSWER_NOT_IN_LABELS = 22


MAX_PAIRS = 64
"""At most this many (AU, box) pairs per trace; more is ``TOO_MANY_PAIRS`` (extras dropped)."""
MAX_AUS_PER_STEP = 16
"""At most this many distinct AUs per step; more is ``TOO_MANY_AUS`` (extras dropped)."""
MAX_AU_DIGITS = 3
"""An AU number has at most this many significant digits (``AU0012`` is AU12)."""
MAX_NUMBER_DIGITS = 15
"""A coordinate has at most this many digits in all, so that it is exact as a float64
mantissa and the parsers agree bit for bit (value = digits / 10**fraction_digits)."""
COORD_LIMIT = 1e6
"""A coordinate with ``abs(value) > COORD_LIMIT`` is ``HUGE_COORD``."""
POW10 = np.array([10.0**k for k in range(MAX_NUMBER_DIGITS + 1)], dtype=np.float64)
"""Exact powers of ten ``1e0 .. 1e15`` (every parser divides by these)."""
assert all(float(POW10[k]) == float(f"1e{k}") for k in range(MAX_NUMBER_DIGITS + 1))

# One bit per reason, ``BIT_<NAME> = 1 << ParseReason.<NAME>``: the bits of
# ``ParsedBatch.reason_mask``, set by both compiled scanners.
for _r in ParseReason:
    globals()[f"BIT_{_r.name}"] = 1 << int(_r)
    __all__.append(f"BIT_{_r.name}")

ANSWER_FALLBACK = -2
"""A scanner's ``answer`` for a row whose answer text is not a known spelling of a label: the
row is resolved in Python with :func:`tag_model.au.canonical_label`."""

NUMBA_CACHE = os.environ.get("TAG_NUMBA_CACHE", "1") != "0"
"""Cache the compiled Numba scanner on disk (``TAG_NUMBA_CACHE=0`` turns it off)."""

AU_TABLE_SIZE = 10**MAX_AU_DIGITS
KNOWN_AU_TABLE = np.zeros(AU_TABLE_SIZE, dtype=np.bool_)
"""``KNOWN_AU_TABLE[n]`` is true when AU ``n`` is in :data:`tag_model.au.AU_CATALOGUE`."""
for _n in AU_CATALOGUE:
    if 0 < _n < AU_TABLE_SIZE:
        KNOWN_AU_TABLE[_n] = True
KNOWN_AU_TABLE.setflags(write=False)

_KEY_WIDTH = 32


def _synonym_candidates() -> list[str]:
    """Strings that name a canonical label, used to build the compiled lookup table.

    The table is only an accelerator: an answer whose normalised text is not in it is resolved
    by :func:`tag_model.au.canonical_label` itself, so the result never depends on this list.
    """
    return [*CANONICAL_LABELS, *LABEL_SYNONYMS]


@dataclass(frozen=True)
class LabelTable:
    """A label set as the parsers see it.

    Attributes:
        names: canonical names; an answer's id is its index here.
        keys: ``uint8[L, 32]`` normalised (ASCII lower-case, single-spaced) spellings that
            resolve to a label without calling Python, zero padded.
        key_len: ``int32[L]`` byte length of each key.
        key_id: ``int32[L]`` label id of each key, or -1 when the spelling names a canonical
            label outside this label set.
    """

    names: tuple[str, ...]
    keys: np.ndarray
    key_len: np.ndarray
    key_id: np.ndarray

    def resolve(self, content: str) -> int:
        """Label id of an answer's text (between the tags), or -1 when not in the set."""
        canon = canonical_label(content)
        if canon is None:
            return -1
        try:
            return self.names.index(canon)
        except ValueError:
            return -1


@lru_cache(maxsize=64)
def _label_table(names: tuple[str, ...]) -> LabelTable:
    rows: dict[bytes, int] = {}
    for cand in _synonym_candidates():
        key = " ".join(cand.split()).lower()
        if not key.isascii() or len(key) > _KEY_WIDTH:
            continue
        canon = canonical_label(key)
        if canon is None:
            continue
        rows[key.encode("ascii")] = names.index(canon) if canon in names else -1
    keys = np.zeros((max(len(rows), 1), _KEY_WIDTH), dtype=np.uint8)
    key_len = np.full(max(len(rows), 1), -1, dtype=np.int32)  # -1: a dummy row never matches
    key_id = np.full(max(len(rows), 1), -1, dtype=np.int32)
    for i, (k, v) in enumerate(sorted(rows.items())):
        keys[i, : len(k)] = np.frombuffer(k, dtype=np.uint8)
        key_len[i] = len(k)
        key_id[i] = v
    for a in (keys, key_len, key_id):
        a.setflags(write=False)
    return LabelTable(names, keys, key_len, key_id)


def label_table(labels: LabelSpace | Sequence[str] | str | None = None) -> LabelTable:
    """The :class:`LabelTable` of a label set.

    Args:
        labels: ``None`` (every canonical label, ids index :data:`CANONICAL_LABELS`), a
            :class:`~tag_model.au.LabelSpace`, a label-space name such as ``"rafdb"``, or a
            sequence of label names (synonyms accepted; ids follow the sequence order).

    Raises:
        ValueError: a name in ``labels`` is not an emotion label.
    """
    if labels is None:
        names: tuple[str, ...] = CANONICAL_LABELS
    elif isinstance(labels, LabelSpace):
        names = labels.names
    elif isinstance(labels, str):
        names = get_label_space(labels).names
    else:
        out = []
        for lab in labels:
            canon = canonical_label(lab) if isinstance(lab, str) else None
            if canon is None:
                raise ValueError(
                    f"labels: {lab!r} is not an emotion label; known: {CANONICAL_LABELS}"
                )
            out.append(canon)
        names = tuple(out)
    return _label_table(names)


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
