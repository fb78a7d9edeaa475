"""``render_trace``: write structured parts in the TAG trace format."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from tag_model.au import canonical_label

from ._codes import COORD_LIMIT, MAX_AUS_PER_STEP

__all__ = ["BOX_DECIMALS", "TraceStep", "format_box", "render_trace"]

BOX_DECIMALS = 3
"""Non-integral coordinates are written with at most this many decimals (rounded)."""

_FORBIDDEN = ("→", "->", "<bbox>", "</bbox>", "<answer>", "</answer>")
_HEADERS = ("global analysis:", "verification loop:", "final conclusion:")


class TraceStep(NamedTuple):
    """One verification step to render.

    Attributes:
        region: face region inspected (one line; no arrows or tags).
        observation: what is seen there (one line; no arrows or tags).
        aus: the AU numbers the box grounds (``()`` for a box with no AU named).
        box: ``(x1, y1, x2, y2)`` in the model's coordinate space, or ``None``.
    """

    region: str
    observation: str
    aus: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None


def _fmt(v: float) -> str:
    v = float(v)
    if not math.isfinite(v) or abs(v) > COORD_LIMIT:
        raise ValueError(f"render_trace: box coordinate {v!r} is not finite or exceeds 1e6")
    if v == int(v):
        return str(int(v))
    s = f"{v:.{BOX_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def format_box(box: Sequence[float]) -> str:
    """``<bbox>[x1,y1,x2,y2]</bbox>``; integral values are written as integers.

    >>> format_box((156.0, 208, 285.5, 314.25))
    '<bbox>[156,208,285.5,314.25]</bbox>'
    """
    if len(box) != 4:
        raise ValueError(f"render_trace: a box needs 4 numbers, got {box!r}")
    return "<bbox>[" + ",".join(_fmt(v) for v in box) + "]</bbox>"


def _check_line(what: str, s: str, *, multiline: bool = False) -> str:
    if not isinstance(s, str):
        raise TypeError(f"render_trace: {what} must be a str, got {type(s).__name__}")
    low = s.lower()
    for tok in _FORBIDDEN:
        if tok in low:
            raise ValueError(f"render_trace: {what} may not contain {tok!r}: {s!r}")
    if not multiline and ("\n" in s or "\r" in s):
        raise ValueError(f"render_trace: {what} must be one line: {s!r}")
    for line in s.split("\n"):
        if line.lstrip(" \t\r\f\v").lower().startswith(_HEADERS):
            raise ValueError(f"render_trace: {what} may not start a line with a header: {s!r}")
    return s.strip(" \t\r\n\f\v")


def _aus_text(aus: Sequence[int], what: str) -> str:
    out = []
    for a in aus:
        if not isinstance(a, int) or isinstance(a, bool) or not 0 < a < 1000:
            raise ValueError(f"render_trace: {what}: AU numbers are ints in 1..999, got {a!r}")
        out.append(f"AU{a}")
    return " ".join(out)


def render_trace(
    global_analysis: str,
    steps: Sequence[TraceStep],
    conclusion_aus: Sequence[int],
    answer: str,
    *,
    conclusion_text: str | None = None,
) -> str:
    """Write a trace in the TAG format.

    Args:
        global_analysis: free text (may span lines, but no line may start with a header).
        steps: the verification steps.
        conclusion_aus: AU numbers the conclusion combines (written ``AU6 + AU12``).
        answer: the emotion label written between the answer tags.
        conclusion_text: the conclusion sentence, used verbatim; its AU mentions must be exactly
            ``conclusion_aus``. By default ``"Combined AU6 + AU12 indicate a dominant emotion of
            {answer}."``.

    Returns:
        The trace; :func:`parse_trace` reads the same parts back. Region, observation and
        global-analysis text come back stripped of surrounding whitespace; coordinates with
        more than 3 decimals come back rounded.

    Raises:
        ValueError: a part cannot be written so that it parses back (arrows or tags inside a
            field, a multi-line region, a non-finite coordinate, ...).

    >>> print(render_trace("Raised cheeks.", [TraceStep("cheeks", "raised", (6,),
    ...     (156, 208, 285, 314))], [6, 12], "happiness"))
    Global analysis: Raised cheeks.
    Verification loop:
    Inspect cheeks → raised → AU6 <bbox>[156,208,285,314]</bbox>
    Final conclusion: Combined AU6 + AU12 indicate a dominant emotion of happiness.
    <answer> happiness </answer>
    """
    ga = _check_line("global_analysis", global_analysis, multiline=True)
    ans = _check_line("answer", answer)
    if canonical_label(ans) is None:
        raise ValueError(f"render_trace: answer {answer!r} is not an emotion label")
    lines = [f"Global analysis: {ga}", "Verification loop:"]
    for i, st in enumerate(steps):
        st = TraceStep(*st)
        region = _check_line(f"steps[{i}].region", st.region)
        obs = _check_line(f"steps[{i}].observation", st.observation)
        if len(set(st.aus)) != len(st.aus) or len(st.aus) > MAX_AUS_PER_STEP:
            raise ValueError(
                f"render_trace: steps[{i}].aus must be at most {MAX_AUS_PER_STEP} distinct "
                f"AUs, got {st.aus!r}"
            )
        line = f"Inspect {region} → {obs} → {_aus_text(st.aus, f'steps[{i}].aus')}"
        if st.box is not None:
            line = f"{line.rstrip()} {format_box(st.box)}"
        lines.append(line.rstrip())
    if conclusion_text is None:
        if conclusion_aus:
            joined = " + ".join(f"AU{a}" for a in conclusion_aus)
            ctext = f"Combined {joined} indicate a dominant emotion of {ans}."
        else:
            ctext = f"The evidence indicates a dominant emotion of {ans}."
        _aus_text(conclusion_aus, "conclusion_aus")
    else:
        ctext = _check_line("conclusion_text", conclusion_text)
        from ._parse import parse_trace

        probe = parse_trace(f"Final conclusion: {ctext}")
        if probe.conclusion_aus != list(conclusion_aus):
            raise ValueError(
                f"render_trace: conclusion_text names AUs {probe.conclusion_aus}, "
                f"but conclusion_aus is {list(conclusion_aus)}"
            )
    lines.append(f"Final conclusion: {ctext}")
    lines.append(f"<answer> {ans} </answer>")
    return "\n".join(lines)
