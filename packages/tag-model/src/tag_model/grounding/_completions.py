"""Completion -> text: the one rule every TAG reward, parser and teacher uses.

TRL hands a reward each completion as a string (standard format) or as a list of messages
(conversational format, ``[{"role": "assistant", "content": ...}]``, where ``content`` is a
string or a list of parts ``{"type": "text", "text": ...}``). The rule:

* a string is the text; bytes are decoded as UTF-8 (bad bytes replaced);
* a message's text is its text parts concatenated with nothing between them (parts are pieces
  of one message; image parts carry no text);
* a list of messages gives the texts of its ``assistant`` messages, joined by a newline (a
  trace is line-based, so a step never glues onto the previous message's last line); when no
  message has ``role == "assistant"``, every message counts;
* anything else is the empty string (it then fails to parse; it never raises).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["completion_text", "completion_texts", "content_text"]


def content_text(content: Any) -> str:
    """The text of one message's ``content``: a string, or its text parts concatenated.

    >>> content_text([{"type": "image"}, {"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    'ab'
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and p.get("type", "text") == "text":
                t = p.get("text")
                if isinstance(t, str):
                    parts.append(t)
        return "".join(parts)
    return ""


def completion_text(completion: Any) -> str:
    """The text of one completion, standard or conversational (see the module's rule).

    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}])
    'hi'
    >>> completion_text([{"role": "assistant", "content": "Global analysis: x"},
    ...                  {"role": "tool", "content": "ignored"},
    ...                  {"role": "assistant", "content": "<answer> fear </answer>"}])
    'Global analysis: x\\n<answer> fear </answer>'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, bytes | bytearray):
        return bytes(completion).decode("utf-8", "replace")
    if isinstance(completion, dict):
        return content_text(completion.get("content"))
    if isinstance(completion, list | tuple):
        msgs = [m for m in completion if isinstance(m, dict)]
        if not msgs:
            return content_text(completion)
        chosen = [m for m in msgs if m.get("role") == "assistant"] or msgs
        return "\n".join(content_text(m.get("content")) for m in chosen)
    return ""


def completion_texts(completions: Sequence[Any]) -> list[str]:
    """:func:`completion_text` of each completion (strings pass through untouched).

    >>> completion_texts(["a", [{"role": "assistant", "content": "b"}], None])
    ['a', 'b', '']
    """
    return [c if type(c) is str else completion_text(c) for c in completions]
