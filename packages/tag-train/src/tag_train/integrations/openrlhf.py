"""TAG's rewards as an OpenRLHF ``reward_func`` (``--reward.remote_url /path/to/openrlhf.py``).

OpenRLHF (checked against 0.11.2's ``openrlhf/utils/agent.py``) loads ``reward_func`` from the
file and calls ``reward_func(queries, prompts, labels)`` with ``queries`` the decoded prompt +
response (special tokens kept), ``prompts`` the chat-templated prompts and ``labels`` the
dataset's ``--data.label_key`` column. It reads ``rewards`` (advantages), ``scores``
(dynamic filtering) and ``extra_logs`` from the returned dict; a bare tensor is not read by
0.11.2 (``rewards_info.get(...)``), so a dict is returned.

``labels`` are the JSON strings ``tag-train export --format openrlhf`` writes (see
:class:`tag_train.integrations.GroundTruth`). Weights: :func:`configure` (default 1/1/1).

OpenRLHF flags::

    --reward.remote_url /path/to/tag_train/integrations/openrlhf.py
    --data.input_key prompt --data.label_key label --data.image_key images --data.apply_chat_template

This module imports nothing from OpenRLHF (torch is imported when called).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tag_train.integrations._score import configure, get_settings, score_batch

__all__ = ["configure", "response_text", "reward_func"]

#: end-of-turn markers a decoded query may end with (special tokens are kept in it)
_END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "</s>")
_TAILS = (64, 32, 16)


def response_text(query: Any, prompt: Any) -> str:
    """The response part of an OpenRLHF ``query`` (prompt + response, decoded).

    The query starts with the prompt when the prompt re-decodes to itself; a VLM prompt does
    not (the processor expands each image placeholder into many tokens), so the response is
    what follows the prompt's last characters (its generation prompt, e.g.
    ``<|im_start|>assistant\\n``). Trailing end-of-turn markers are dropped.
    """
    q = query if isinstance(query, str) else ("" if query is None else str(query))
    p = prompt if isinstance(prompt, str) else ""
    if p and q.startswith(p):
        out = q[len(p) :]
    else:
        out = q
        for k in _TAILS:  # the longest end of the prompt that the query holds verbatim
            tail = p[-k:]
            pos = q.find(tail) if tail else -1
            if pos >= 0:
                out = q[pos + len(tail) :]
                break
    out = out.rstrip()
    changed = True
    while changed:
        changed = False
        for m in _END_MARKERS:
            if out.endswith(m):
                out, changed = out[: -len(m)].rstrip(), True
    return out


def reward_func(
    queries: Sequence[Any], prompts: Sequence[Any], labels: Sequence[Any], **kwargs: Any
) -> dict[str, Any]:
    """``{"rewards": Tensor[B], "scores": Tensor[B], "extra_logs": {...}}``: TAG's weighted
    total per query (one ``parse_batch`` and one ``au_grounding_reward`` call per batch),
    and the mean of each component in ``extra_logs``."""
    import torch

    queries, labels = list(queries), list(labels)
    prompts = list(prompts) if prompts is not None else [""] * len(queries)
    if not len(queries) == len(prompts) == len(labels):
        raise ValueError(
            f"got {len(queries)} queries, {len(prompts)} prompts and {len(labels)} labels"
        )
    texts = [response_text(q, p) for q, p in zip(queries, prompts, strict=True)]
    s = score_batch(texts, labels, settings=get_settings().merged(kwargs))
    total = torch.from_numpy(s.total.astype("float32"))
    n = max(1, len(texts))
    logs = {
        "tag/format": float(s.format.sum() / n),
        "tag/answer": float(s.answer.sum() / n),
        "tag/grounding": float(s.grounding.sum() / n),
    }
    return {"rewards": total, "scores": total.clone(), "extra_logs": logs}
