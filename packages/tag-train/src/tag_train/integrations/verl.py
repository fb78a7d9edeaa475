"""TAG's rewards as a verl ``custom_reward_function`` (checked against verl 0.9.1's source).

verl 0.9.1's trainer calls ``compute_score(data_source, solution_str, ground_truth,
extra_info)`` once per response (its reward loop, ``reward.reward_manager.name=naive``, from a
thread pool), as does the legacy ``verl.workers.reward_manager.naive.NaiveRewardManager``.
The legacy ``BatchRewardManager`` (``verl.workers.reward_manager.batch``; the trainer's
``batch`` manager in earlier verl releases, absent from 0.9.1's reward-loop registry) calls
``compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos,
**reward_kwargs)`` once per batch.
Both return ``{"score", "format", "answer", "grounding"}`` per response: ``score`` goes to
the last response token, the other keys are logged as ``reward_extra_info``.

``ground_truth`` is the dataset's ``reward_model.ground_truth``: the JSON string that
``tag-train export --format verl`` writes (or its dict); see
:class:`tag_train.integrations.GroundTruth`.

Weights (``score = format_weight * format + answer_weight * answer + grounding_weight *
grounding``, default 1/1/1) and the grounding options (``beta``, ``class_aware``,
``empty_value``) come from, first match wins: the row's ``extra_info`` (weights only),
verl's ``reward.custom_reward_function.reward_kwargs`` (keyword arguments), :func:`configure`.

verl config::

    reward.custom_reward_function.path=$(python -c "import tag_train.integrations.verl as m; print(m.__file__)")
    reward.custom_reward_function.name=compute_score              # per response
    reward.reward_manager.name=naive
    # driving verl's legacy BatchRewardManager yourself: compute_score=compute_score_batch

This module imports nothing from verl.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tag_train.integrations._score import configure, get_settings, row_weights, score_batch

__all__ = ["compute_score", "compute_score_batch", "configure"]

_KEYS = ("score", "format", "answer", "grounding")


def compute_score_batch(
    data_sources: Sequence[Any] | None = None,
    solution_strs: Sequence[Any] | None = None,
    ground_truths: Sequence[Any] | None = None,
    extra_infos: Sequence[Any] | None = None,
    **kwargs: Any,
) -> list[dict[str, float]]:
    """One dict ``{score, format, answer, grounding}`` per response; one ``parse_batch`` and
    one ``au_grounding_reward`` call for the batch (per backbone family / pixel budget).

    ``data_sources`` is not used (TAG scores every source the same way). Unknown keyword
    arguments (verl's ``reward_router_address``, ...) are ignored.
    """
    if solution_strs is None or ground_truths is None:
        raise ValueError("compute_score_batch needs solution_strs and ground_truths")
    solutions = list(solution_strs)
    settings = get_settings().merged(kwargs)
    extras = None if extra_infos is None else list(extra_infos)
    if extras is not None and len(extras) != len(solutions):
        raise ValueError(f"got {len(solutions)} solution_strs but {len(extras)} extra_infos")
    s = score_batch(
        solutions,
        list(ground_truths),
        settings=settings,
        row_weights=row_weights(settings, extras),
    )
    cols = [x.tolist() for x in (s.total, s.format, s.answer, s.grounding)]
    return [dict(zip(_KEYS, row, strict=True)) for row in zip(*cols, strict=True)]


def compute_score(
    data_source: Any = None,
    solution_str: Any = None,
    ground_truth: Any = None,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """verl's per-response contract: ``{score, format, answer, grounding}`` for one response.

    Called with lists (``data_sources=...``, or a list ``solution_str``), it forwards to
    :func:`compute_score_batch`, so one function name serves both verl managers.
    """
    if "solution_strs" in kwargs or "ground_truths" in kwargs:
        return compute_score_batch(  # type: ignore[return-value]
            kwargs.pop("data_sources", None),
            kwargs.pop("solution_strs", None),
            kwargs.pop("ground_truths", None),
            kwargs.pop("extra_infos", None),
            **kwargs,
        )
    return compute_score_batch(
        [data_source], [solution_str], [ground_truth], [extra_info], **kwargs
    )[0]
