"""TAG's rewards as an EasyR1 reward function (``worker.reward.reward_function``).

EasyR1's ``BatchFunctionRewardManager`` calls ``compute_score(reward_inputs, **kwargs)`` once
per batch with ``RewardInput`` dicts ``{"response", "response_length", "ground_truth"}`` and
puts each returned dict's ``overall`` on the response's last token; every key is logged.
(Contract read from hiyouga/EasyR1's ``verl/workers/reward/function.py`` and
``examples/reward_function/math.py``; EasyR1 is not on PyPI, and the slow test
``tests/train/test_integrations_easyr1.py`` runs its ``AutoRewardManager`` from a checkout
named by ``EASYR1_SRC``.)

``ground_truth`` is the dataset's answer column: the JSON string that
``tag-train export --format easyr1`` writes (see :class:`tag_train.integrations.GroundTruth`).
Returned per response: ``overall`` (weighted total, weights default 1/1/1), ``format``,
``accuracy`` (the answer reward) and ``grounding``. Keyword arguments
(``worker.reward.reward_function_kwargs``): ``format_weight``, ``answer_weight``,
``grounding_weight``, ``beta``, ``class_aware``, ``empty_value``; defaults from
:func:`configure`.

EasyR1 config::

    worker:
      reward:
        reward_type: batch
        reward_function: /path/to/tag_train/integrations/easyr1.py:compute_score

This module imports nothing from EasyR1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tag_train.integrations._score import configure, get_settings, score_batch

__all__ = ["REWARD_NAME", "REWARD_TYPE", "compute_score", "configure"]

#: EasyR1 reads these module attributes: one call per batch.
REWARD_NAME = "tag"
REWARD_TYPE = "batch"


def _one(x: Any, i: int) -> Mapping[str, Any]:
    if not isinstance(x, Mapping):
        raise ValueError(f"reward_inputs[{i}]: expected a dict {{response, ground_truth, ...}}")
    for key in ("response", "ground_truth"):
        if key not in x:
            raise ValueError(f"reward_inputs[{i}].{key}: missing (has {sorted(x)})")
    return x


def compute_score(
    reward_inputs: Sequence[Mapping[str, Any]] | Mapping[str, Any], **kwargs: Any
) -> list[dict[str, float]] | dict[str, float]:
    """``[{overall, format, accuracy, grounding}]``, one per ``RewardInput``; one
    ``parse_batch`` and one ``au_grounding_reward`` call for the batch.

    A single dict (EasyR1's ``sequential`` reward type) gives a single dict back.
    """
    if isinstance(reward_inputs, Mapping):
        return compute_score([reward_inputs], **kwargs)[0]  # type: ignore[index]
    rows = [_one(x, i) for i, x in enumerate(reward_inputs)]
    s = score_batch(
        [r["response"] for r in rows],
        [r["ground_truth"] for r in rows],
        settings=get_settings().merged(kwargs),
    )
    keys = ("overall", "format", "accuracy", "grounding")
    cols = [x.tolist() for x in (s.total, s.format, s.answer, s.grounding)]
    return [dict(zip(keys, row, strict=True)) for row in zip(*cols, strict=True)]
