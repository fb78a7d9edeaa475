"""Grounded traces: render them, and parse them one at a time or compiled in batches.

The trace format (see ``docs/architecture.md`` and the grammar in :mod:`._parse`)::

    Global analysis: <free text>
    Verification loop:
    Inspect <region> → <observation> → AU6 <bbox>[156,208,285,314]</bbox>
    Inspect <region> → <observation> → AU4 AU9 <bbox>[153,115,242,188]</bbox>
    Final conclusion: Combined AU6 + AU12 indicate a dominant emotion of happiness.
    <answer> happiness </answer>

* :func:`render_trace` writes it; :func:`parse_trace` reads one completion into a
  :class:`ParsedTrace` (never raising on model output).
* :func:`parse_batch` reads a batch (strings, or token ids with a tokenizer) with a compiled
  scanner (Numba on the CPU, Triton for CUDA token ids) into padded arrays for
  ``tag_kernels.au_reward.au_grounding_reward``; it agrees with :func:`parse_trace` exactly.
* :func:`completion_text` is the one rule that turns a completion (a string or chat messages)
  into the text that is parsed. The TRL rewards built on these live in ``tag_train.rewards``.
"""

from ._batch import parse_batch
from ._codes import (
    COORD_LIMIT,
    MAX_AUS_PER_STEP,
    MAX_PAIRS,
    ParsedBatch,
    ParseReason,
    label_table,
)
from ._completions import completion_text, completion_texts, content_text
from ._native import normalise_native_boxes
from ._parse import ParsedStep, ParsedTrace, TraceError, mentioned_aus, parse_trace
from ._render import TraceStep, format_box, render_trace
from ._tokens import TokenBytes, token_bytes

__all__ = [
    "COORD_LIMIT",
    "MAX_AUS_PER_STEP",
    "MAX_PAIRS",
    "ParseReason",
    "ParsedBatch",
    "ParsedStep",
    "ParsedTrace",
    "TokenBytes",
    "TraceError",
    "TraceStep",
    "completion_text",
    "completion_texts",
    "content_text",
    "format_box",
    "label_table",
    "mentioned_aus",
    "normalise_native_boxes",
    "parse_batch",
    "parse_trace",
    "render_trace",
    "token_bytes",
]
