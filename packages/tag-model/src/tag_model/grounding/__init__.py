"""Grounded traces: render, parse (one at a time or compiled in batches) and TRL rewards.

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
* :func:`format_reward` and :func:`answer_reward` are TRL reward functions.
"""

from ._batch import ParsedBatch, TokenBytes, parse_batch, token_bytes
from ._codes import COORD_LIMIT, MAX_AUS_PER_STEP, MAX_PAIRS, ParseReason, label_table
from ._parse import ParsedStep, ParsedTrace, TraceError, parse_trace
from ._render import TraceStep, format_box, render_trace
from ._rewards import answer_reward, completion_text, format_reward

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
    "answer_reward",
    "completion_text",
    "format_box",
    "format_reward",
    "label_table",
    "parse_batch",
    "parse_trace",
    "render_trace",
    "token_bytes",
]
