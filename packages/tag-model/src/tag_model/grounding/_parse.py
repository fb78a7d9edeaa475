"""``parse_trace``: the Python reference parser of the grounded-trace format.

The grammar (all keywords and tags match ASCII case-insensitively; "whitespace" inside a line
is ASCII space, tab, CR, FF and VT; lines are split on ``\\n`` only)::

    <anything>                                         ignored preamble
    Global analysis: <text, may span lines>            section G
    Verification loop:                                 section V
    Inspect <region> → <observation> → <AUs> <bbox>[x1,y1,x2,y2]</bbox>    a step (one line)
    ...
    Final conclusion: <text naming AUs>                section C
    <answer> <label> </answer>

* **Body and answer.** The body is the text before the first ``<answer>``; headers and steps are
  read there only. One ``<answer>`` followed by one ``</answer>`` is required; the text between
  them is resolved with :func:`tag_model.au.canonical_label` and must be in the label set.
* **Headers** start a line (after whitespace). A header's section runs to the next header line.
  The rest of a header line belongs to its section. ``global_analysis`` and ``conclusion_text``
  are the stripped text of the *first* G and C sections; both must be non-blank.
* **Steps** are the non-blank lines of V sections. Arrows are ``→`` or ``->``. A step's AUs are
  the AU mentions after its last arrow and before its ``<bbox>`` (or the line end); its region
  is the text before the first arrow without the leading word ``Inspect``; its observation is
  the text between the first and the last arrow. A *boxed* step (one with ``<bbox>``) must start
  with ``Inspect`` and have two arrows or more before the box (else ``MALFORMED_STEP``).
* **AU mentions**: ``AU`` not preceded by an ASCII letter or digit, then spaces/tabs, then
  ASCII digits: ``AU6``, ``AU06``, ``au6``, ``AU 6`` are AU 6. More than 3 significant digits is
  ``BAD_AU`` (the mention is dropped). A number outside ``AU_CATALOGUE`` (``AU99``, ``AU0``)
  is ``UNKNOWN_AU`` and *kept*: its pair matches nothing class-aware, so it costs precision.
  A step keeps its first 16 distinct AUs in order (``TOO_MANY_AUS`` beyond). Mentions in the
  conclusion give ``conclusion_aus`` and are checked the same way.
* **Native boxes**: InternVL's ``<box>[[x1, y1, x2, y2]]</box>`` is read as
  ``<bbox>[x1, y1, x2, y2]</bbox>``: a same-length rewrite before parsing (:mod:`._native`),
  which :func:`~tag_model.grounding.parse_batch` applies too.
* **Boxes**: ``<bbox>`` then ``</bbox>`` on the same line; between them optional ``[``, four
  numbers ``-?digits(.digits)?`` separated by commas, and ``]`` exactly when ``[`` was there,
  with whitespace anywhere between tokens. No exponents, NaN or inf (``BAD_BOX``). A number has
  at most 15 digits and ``|value| <= 1e6`` (``HUGE_COORD``); ``x1 < x2`` and ``y1 < y2``
  (``INVERTED_BOX``). value = int(all digits) / 10**fraction_digits in float64, which every
  parser computes identically.
* **Pairs** (what the AU-grounding reward scores): each step with a *valid* box gives one pair
  ``(au, box)`` per AU of the step, or one pair ``(0, box)`` when the step names no AU. Steps
  with invalid boxes give no pair (their error already fails ``format_ok``). At most 64 pairs,
  in text order (``TOO_MANY_PAIRS`` beyond).
* ``format_ok`` is true exactly when ``errors`` is empty; ``reason`` is the smallest
  :class:`ParseReason` among the errors.

Every step is linear in the text length: ``str.find``/``str.count`` and regexes without nested
quantifiers over bounded line segments.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

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
from ._native import normalise_native_text

__all__ = ["ParsedStep", "ParsedTrace", "TraceError", "mentioned_aus", "parse_trace"]

Box = tuple[float, float, float, float]

_LINE_WS = " \t\r\f\v"
_ALL_WS = " \t\r\n\f\v"
_ALNUM = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEADERS = (("global analysis:", 1), ("verification loop:", 2), ("final conclusion:", 3))
_AU_RE = re.compile(r"au[ \t]*([0-9]+)")
_NUM = r"(-?)([0-9]+)(?:\.([0-9]+))?"
_W = r"[ \t\r\f\v]*"
_BOX_RE = re.compile(
    rf"{_W}(?:(\[){_W})?{_NUM}{_W},{_W}{_NUM}{_W},{_W}{_NUM}{_W},{_W}{_NUM}{_W}(?:(\]){_W})?"
)


@dataclass(frozen=True)
class TraceError:
    """One thing that did not parse: its :class:`ParseReason`, char offset and a detail."""

    code: ParseReason
    pos: int
    detail: str

    def __str__(self) -> str:
        return f"{self.code.name} at {self.pos}: {self.detail}"


@dataclass(frozen=True)
class ParsedStep:
    """One line of the verification loop.

    Attributes:
        region: the text before the first arrow, without a leading ``Inspect``.
        observation: the text between the first and the last arrow (``""`` with < 2 arrows).
        aus: the step's distinct AU numbers in order (at most 16).
        box: ``(x1, y1, x2, y2)`` in the model's coordinate space, or ``None`` when the step
            has no box or its box is invalid.
        span: ``(start, end)`` character offsets of the step's text in the completion.
    """

    region: str
    observation: str
    aus: list[int]
    box: Box | None
    span: tuple[int, int]


@dataclass
class ParsedTrace:
    """The structured content of one completion (see the module docstring for the grammar).

    Attributes:
        global_analysis: stripped text of the first ``Global analysis:`` section, or ``None``.
        steps: the steps of the verification loop(s).
        conclusion_aus: distinct AU numbers named in the first conclusion, in order.
        conclusion_text: stripped text of the first ``Final conclusion:`` section, or ``None``.
        answer: canonical label of the answer when it is one label of the label set, else None.
        answer_id: index of ``answer`` in the label set, or -1.
        format_ok: true exactly when ``errors`` is empty.
        errors: everything that did not parse, in the order found.
    """

    global_analysis: str | None
    steps: list[ParsedStep]
    conclusion_aus: list[int]
    conclusion_text: str | None
    answer: str | None
    answer_id: int
    format_ok: bool
    errors: list[TraceError] = field(default_factory=list)
    _pairs: list[tuple[int, Box]] = field(default_factory=list, repr=False)

    def pairs(self) -> list[tuple[int, Box]]:
        """The (AU, box) pairs the AU-grounding reward scores, in text order (at most 64).

        A step ``AU4 AU9 <bbox>b</bbox>`` gives ``(4, b), (9, b)``; a box with no AU gives
        ``(0, b)``; steps whose box is invalid give nothing.
        """
        return list(self._pairs)

    @property
    def reason(self) -> ParseReason:
        """The smallest error code, or ``ParseReason.OK``."""
        return min((e.code for e in self.errors), default=ParseReason.OK)

    @property
    def reason_mask(self) -> int:
        """Bit ``c`` is set when an error with code ``c`` occurred."""
        m = 0
        for e in self.errors:
            m |= 1 << int(e.code)
        return m


class _State:
    __slots__ = ("errors", "lower", "text")

    def __init__(self, text: str, lower: str) -> None:
        self.text = text
        self.lower = lower
        self.errors: list[TraceError] = []

    def err(self, code: ParseReason, pos: int, detail: str) -> None:
        self.errors.append(TraceError(code, pos, detail))

    def au_mentions(self, a: int, b: int) -> list[tuple[int, int]]:
        """AU numbers mentioned in ``[a, b)`` as ``(number, pos)``; flags BAD/UNKNOWN_AU."""
        out: list[tuple[int, int]] = []
        lower = self.lower
        for m in _AU_RE.finditer(lower, a, b):
            i = m.start()
            if i > 0 and lower[i - 1] in _ALNUM:
                continue
            digits = m.group(1).lstrip("0")
            if len(digits) > MAX_AU_DIGITS:
                self.err(ParseReason.BAD_AU, i, f"AU number too long: {m.group(0)[:24]!r}")
                continue
            n = int(digits) if digits else 0
            if not KNOWN_AU_TABLE[n]:
                self.err(ParseReason.UNKNOWN_AU, i, f"AU{n} is not in the FACS catalogue")
            out.append((n, i))
        return out

    def parse_box(self, a: int, b: int) -> Box | None:
        m = _BOX_RE.fullmatch(self.text, a, b)
        if m is None or (m.group(1) is None) != (m.group(14) is None):
            self.err(ParseReason.BAD_BOX, a, f"not [x1,y1,x2,y2]: {self.text[a:b][:60]!r}")
            return None
        vals = []
        huge = False
        grp = m.groups()
        for g in (1, 4, 7, 10):
            sign, ip, fp = grp[g], grp[g + 1], grp[g + 2] or ""
            if len(ip) + len(fp) > MAX_NUMBER_DIGITS:
                huge = True
                vals.append(0.0)
                continue
            v = float(int(ip + fp)) / float(POW10[len(fp)])
            if sign:
                v = -v
            if abs(v) > COORD_LIMIT:
                huge = True
            vals.append(v)
        if huge:
            self.err(ParseReason.HUGE_COORD, a, f"coordinate too large: {self.text[a:b][:60]!r}")
            return None
        x1, y1, x2, y2 = vals
        if not (x1 < x2 and y1 < y2):
            self.err(ParseReason.INVERTED_BOX, a, f"inverted box {vals}")
            return None
        return (x1, y1, x2, y2)


def _ascii_lower(text: str) -> str:
    """``text`` with A-Z lowered and every other character kept (same length).

    ``bytes.lower`` touches only ASCII letters; in UTF-32 every other code point keeps its
    high bytes, so it stays a non-ASCII character.
    """
    if text.isascii():
        return text.lower()
    return text.encode("utf-32-le", "surrogatepass").lower().decode("utf-32-le", "surrogatepass")


def _resolve_labels(labels: LabelSpace | Sequence[str] | str | LabelTable | None) -> LabelTable:
    return labels if isinstance(labels, LabelTable) else label_table(labels)


def parse_trace(
    text: str, *, labels: LabelSpace | Sequence[str] | str | None = None
) -> ParsedTrace:
    """Parse one completion in the TAG trace format; never raises on model output.

    Args:
        text: the completion (``bytes`` are decoded as UTF-8 with replacement).
        labels: the label set (``None``: every canonical emotion name and its synonyms; a
            :class:`~tag_model.au.LabelSpace`, a label-space name, or a list of names).

    Returns:
        A :class:`ParsedTrace`. Boxes stay in the model's coordinate space.

    >>> t = parse_trace(
    ...     "Global analysis: smiling face.\\nVerification loop:\\n"
    ...     "Inspect cheeks → raised → AU6 <bbox>[156,208,285,314]</bbox>\\n"
    ...     "Final conclusion: AU6 + AU12 indicate happiness.\\n<answer> happy </answer>")
    >>> t.format_ok, t.answer, t.pairs(), t.conclusion_aus
    (True, 'happiness', [(6, (156.0, 208.0, 285.0, 314.0))], [6, 12])
    >>> parse_trace("Global analysis: x\\n<answer>happiness").reason.name
    'MISSING_VERIFICATION_LOOP'
    """
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", "replace")
    elif not isinstance(text, str):
        raise TypeError(f"parse_trace: text must be str or bytes, got {type(text).__name__}")
    table = _resolve_labels(labels)
    text = normalise_native_text(text)  # InternVL's <box>[[..]]</box> -> <bbox>[..]</bbox>
    lower = _ascii_lower(text)
    st = _State(text, lower)
    R = ParseReason

    # The answer tags, over the whole text.
    o1 = lower.find("<answer>")
    body_end = o1 if o1 >= 0 else len(text)

    # Lines of the body.
    seen = [False, False, False, False]
    max_rank = 0
    section = 0
    g_span: list[int] | None = None  # [start, end) of the first G section
    c_span: list[int] | None = None
    active = 0  # 1 or 3 while the first G / C section is being read
    steps: list[ParsedStep] = []
    conclusion_aus: dict[int, None] = {}
    pairs: list[tuple[int, Box]] = []
    n_boxed = 0
    ls = 0
    while True:
        le = lower.find("\n", ls, body_end)
        if le < 0:
            le = body_end
        p = ls
        while p < le and text[p] in _LINE_WS:
            p += 1
        cs = ls
        for name, rank in _HEADERS:
            if lower.startswith(name, p, le):
                if seen[rank]:
                    st.err(R.DUPLICATE_SECTION, p, f"second {name!r} header")
                elif rank < max_rank:
                    st.err(R.SECTION_ORDER, p, f"{name!r} after a later section")
                if active == 1 and g_span is not None:
                    g_span[1] = ls
                if active == 3 and c_span is not None:
                    c_span[1] = ls
                active = 0
                if not seen[rank]:
                    if rank == 1:
                        g_span = [p + len(name), body_end]
                        active = 1
                    elif rank == 3:
                        c_span = [p + len(name), body_end]
                        active = 3
                seen[rank] = True
                max_rank = max(max_rank, rank)
                section = rank
                cs = p + len(name)
                break
        if section == 3:
            for n, _ in st.au_mentions(cs, le):
                if active == 3:
                    conclusion_aus.setdefault(n, None)
        elif section == 2 and text[cs:le].strip(_ALL_WS):
            n_boxed += _step(st, cs, le, steps, pairs)
        if le >= body_end:
            break
        ls = le + 1

    if not seen[1]:
        st.err(R.MISSING_GLOBAL_ANALYSIS, 0, "no 'Global analysis:' line")
    global_analysis = text[g_span[0] : g_span[1]].strip(_ALL_WS) if g_span else None
    if global_analysis == "":
        st.err(R.EMPTY_SECTION, g_span[0] if g_span else 0, "empty global analysis")
    if not seen[2]:
        st.err(R.MISSING_VERIFICATION_LOOP, 0, "no 'Verification loop:' line")
    elif n_boxed == 0:
        st.err(R.NO_BOXED_STEP, 0, "no step of the verification loop has a <bbox>")
    if not seen[3]:
        st.err(R.MISSING_CONCLUSION, 0, "no 'Final conclusion:' line")
    conclusion_text = text[c_span[0] : c_span[1]].strip(_ALL_WS) if c_span else None
    if conclusion_text == "":
        st.err(R.EMPTY_SECTION, c_span[0] if c_span else 0, "empty conclusion")

    answer: str | None = None
    answer_id = -1
    if o1 < 0:
        st.err(R.MISSING_ANSWER, len(text), "no <answer>")
    else:
        n_open = lower.count("<answer>")
        c1 = lower.find("</answer>", o1 + 8)
        if n_open >= 2:
            o2 = lower.find("<answer>", o1 + 8)
            if c1 < 0 or o2 < c1:
                st.err(R.NESTED_ANSWER, o2, "<answer> inside <answer>")
            else:
                st.err(R.DUPLICATE_ANSWER, o2, "more than one <answer>")
        elif c1 < 0:
            st.err(R.UNCLOSED_ANSWER, o1, "<answer> is never closed (truncated?)")
        elif lower.count("</answer>") >= 2:
            st.err(R.DUPLICATE_ANSWER, o1, "more than one </answer>")
        else:
            content = text[o1 + 8 : c1]
            answer_id = table.resolve(content)
            if answer_id < 0:
                st.err(R.ANSWER_NOT_IN_LABELS, o1, f"{content.strip()[:40]!r} not in {table.names}")
            else:
                answer = table.names[answer_id]

    return ParsedTrace(
        global_analysis=global_analysis,
        steps=steps,
        conclusion_aus=list(conclusion_aus),
        conclusion_text=conclusion_text,
        answer=answer,
        answer_id=answer_id,
        format_ok=not st.errors,
        errors=st.errors,
        _pairs=pairs,
    )


def mentioned_aus(text: str) -> tuple[int, ...]:
    """The distinct AU numbers that ``text`` mentions, in order, by the trace grammar's rule.

    The rule of steps and conclusions (see the module docstring): ``AU`` not preceded by an
    ASCII letter or digit, then spaces/tabs, then ASCII digits. A mention with more than 3
    significant digits is dropped (``BAD_AU``); numbers outside ``AU_CATALOGUE`` are kept.

    >>> mentioned_aus("Combined AU6 + au 12 (and AU06); not xAU4, not AU1234; AU99")
    (6, 12, 99)
    """
    st = _State(text, _ascii_lower(text))
    return tuple(dict.fromkeys(n for n, _ in st.au_mentions(0, len(text))))


def _find_arrows(lower: str, a: int, b: int) -> list[tuple[int, int]]:
    """``(start, end)`` of every ``→`` / ``->`` in ``[a, b)``, in order."""
    out = []
    for tok in ("→", "->"):
        i = lower.find(tok, a, b)
        while i >= 0:
            out.append((i, i + len(tok)))
            i = lower.find(tok, i + len(tok), b)
    out.sort()
    return out


def _step(
    st: _State,
    s: int,
    e: int,
    steps: list[ParsedStep],
    pairs: list[tuple[int, Box]],
) -> int:
    """Parse the step in ``[s, e)``; append it (and its pairs). Returns 1 if it is boxed."""
    R = ParseReason
    text, lower = st.text, st.lower
    bb = lower.find("<bbox>", s, e)
    seg_end = bb if bb >= 0 else e
    arrows = _find_arrows(lower, s, seg_end)
    au_start = arrows[-1][1] if arrows else s
    aus: list[int] = []
    for n, pos in st.au_mentions(au_start, seg_end):
        if n in aus:
            continue
        if len(aus) >= MAX_AUS_PER_STEP:
            st.err(R.TOO_MANY_AUS, pos, f"more than {MAX_AUS_PER_STEP} AUs in one step")
            continue
        aus.append(n)
    head = text[s : arrows[0][0] if arrows else seg_end].strip(_ALL_WS)
    starts_inspect = _ascii_lower(head[:7]) == "inspect"
    region = head[7:].strip(_ALL_WS) if starts_inspect else head
    observation = text[arrows[0][1] : arrows[-1][0]].strip(_ALL_WS) if len(arrows) >= 2 else ""
    box: Box | None = None
    if bb >= 0:
        if not starts_inspect or len(arrows) < 2:
            st.err(R.MALFORMED_STEP, s, "a boxed step must read 'Inspect … → … → AUs <bbox>'")
        close = lower.find("</bbox>", bb + 6, e)
        if close < 0:
            st.err(R.UNCLOSED_BBOX, bb, "<bbox> without </bbox> on its line")
        else:
            box = st.parse_box(bb + 6, close)
            if lower.find("<bbox>", close + 7, e) >= 0:
                st.err(R.EXTRA_BBOX, close, "more than one <bbox> on a step line")
            if box is not None:
                for au in aus or [0]:
                    if len(pairs) >= MAX_PAIRS:
                        st.err(R.TOO_MANY_PAIRS, bb, f"more than {MAX_PAIRS} (AU, box) pairs")
                        break
                    pairs.append((au, box))
    steps.append(ParsedStep(region, observation, aus, box, (s, e)))
    return 1 if bb >= 0 else 0
