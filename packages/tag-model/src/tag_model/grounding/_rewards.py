"""TRL-shaped reward functions for the trace format.

TRL calls a reward as ``f(prompts=..., completions=..., completion_ids=..., **columns)`` where
``columns`` are the dataset's other columns, one value per completion. A completion is a string
(standard format) or a list of messages (conversational format,
``[{"role": "assistant", "content": "..."}]``, where ``content`` may also be a list of parts
``{"type": "text", "text": "..."}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tag_model.au import canonical_label

__all__ = ["answer_reward", "completion_text", "format_reward"]


def _content_text(content: Any) -> str:
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
    """The text of one completion, standard or conversational.

    For a list of messages, the contents of the assistant messages are joined (all messages
    when none has ``role == "assistant"``); list contents keep their text parts.

    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}])
    'hi'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, bytes | bytearray):
        return bytes(completion).decode("utf-8", "replace")
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, list | tuple):
        msgs = [m for m in completion if isinstance(m, dict)]
        if not msgs:
            return _content_text(completion)
        chosen = [m for m in msgs if m.get("role") == "assistant"] or msgs
        return "".join(_content_text(m.get("content")) for m in chosen)
    return ""


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 for each completion whose trace is well formed (``parse_trace(..).format_ok``), else 0.

    Parsed with the compiled :func:`parse_batch`. A ``labels`` keyword (a label space, its
    name, or a list of names) restricts the answers counted as well formed; other keywords (the
    dataset columns TRL passes) are ignored.

    Example:
        >>> trace = ("Global analysis: raised cheeks.\\nVerification loop:\\n"
        ...          "Inspect cheeks → raised → AU6 <bbox>[156,208,285,314]</bbox>\\n"
        ...          "Final conclusion: AU6 indicates happiness.\\n<answer> happiness </answer>")
        >>> format_reward([trace, "I think it's happy."])
        [1.0, 0.0]
        >>> format_reward([[{"role": "assistant", "content": trace}]])
        [1.0]
    """
    from ._batch import parse_batch

    if not completions:
        return []
    texts = [completion_text(c) for c in completions]
    pb = parse_batch(texts, labels=kwargs.get("labels"), max_pairs=1)
    return [1.0 if ok else 0.0 for ok in pb.format_ok.tolist()]


def answer_reward(
    completions: Sequence[Any], label: Sequence[Any], **kwargs: Any
) -> list[float | None]:
    """1.0 when a completion's ``<answer>`` names the ground-truth ``label``, else 0.0.

    The answer is read as :func:`parse_trace` reads it (exactly one ``<answer>…</answer>``,
    resolved with :func:`tag_model.au.canonical_label`); ``label`` is the dataset column, in
    canonical names or synonyms. A row whose label is ``None`` or not an emotion gives ``None``
    (TRL skips it). ``labels`` (keyword) restricts the answers counted, as in
    :func:`format_reward`.

    Example:
        >>> answer_reward(["… <answer> Happy </answer>", "<answer>sad</answer>", "no answer"],
        ...               label=["happiness", "anger", "fear"])
        [1.0, 0.0, 0.0]
        >>> answer_reward([[{"role": "assistant", "content": "<answer>fear</answer>"}]],
        ...               label=["afraid"])
        [1.0]
    """
    from ._batch import parse_batch

    if not completions:
        return []
    if len(label) != len(completions):
        raise ValueError(f"answer_reward: {len(completions)} completions but {len(label)} labels")
    texts = [completion_text(c) for c in completions]
    pb = parse_batch(texts, labels=kwargs.get("labels"), max_pairs=1)
    names = pb.labels
    out: list[float | None] = []
    for aid, lab in zip(pb.answer_id.tolist(), label):
        want = canonical_label(lab) if isinstance(lab, str) else None
        if want is None:
            out.append(None)
        else:
            out.append(1.0 if aid >= 0 and names[aid] == want else 0.0)
    return out
