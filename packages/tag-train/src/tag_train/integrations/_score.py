"""The batched core every adapter calls: B completions + B ground truths -> B reward triples.

It is ``tag_train.rewards`` itself: rows are grouped by what changes the reward functions
(backbone family, pixel budget, label set), and each group is scored by the three functions
of :func:`tag_train.rewards.get_tag_rewards`, which share one ``parse_batch`` call; the
grounding reward makes one ``au_grounding_reward`` call. A batch from one dataset is one group:
one parse, one kernel call, whatever the batch size.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from tag_train.integrations._ground_truth import GroundTruth

__all__ = ["RewardSettings", "Scores", "configure", "get_settings", "score_batch"]


@dataclass(frozen=True)
class RewardSettings:
    """Weights of the total score and the grounding reward's options.

    ``score = format_weight * format + answer_weight * answer + grounding_weight * grounding``
    (defaults 1/1/1, as ``reward_weights: [1.0, 1.0, 1.0]`` in TAG's GRPO configs).
    """

    format_weight: float = 1.0
    answer_weight: float = 1.0
    grounding_weight: float = 1.0
    beta: float = 1.0
    class_aware: bool = True
    empty_value: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "class_aware":
                if not isinstance(v, bool | np.bool_):
                    raise ValueError(f"class_aware: expected true or false, got {v!r}")
                continue
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"{f.name}: expected a finite number, got {v!r}")
        if self.beta <= 0:
            raise ValueError(f"beta: expected a positive number, got {self.beta!r}")

    def merged(self, overrides: Mapping[str, Any] | None) -> RewardSettings:
        """A copy with the known keys of ``overrides`` applied (other keys are ignored:
        frameworks pass their own keyword arguments and extra-info fields alongside).
        ``weights: [f, a, g]`` sets the three weights at once."""
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        changes = {k: v for k, v in overrides.items() if k in known and v is not None}
        weights = overrides.get("weights", overrides.get("reward_weights"))
        if weights is not None:
            if not isinstance(weights, Sequence | np.ndarray) or len(weights) != 3:
                raise ValueError(
                    f"weights: expected 3 numbers (format, answer, grounding), got {weights!r}"
                )
            changes.update(zip(("format_weight", "answer_weight", "grounding_weight"), weights))
        if not changes:
            return self
        if "class_aware" in changes and isinstance(changes["class_aware"], str):
            changes["class_aware"] = changes["class_aware"].strip().lower() in ("1", "true", "yes")
        for k in known - {"class_aware"}:
            if k in changes and not isinstance(changes[k], bool):
                try:
                    changes[k] = float(changes[k])
                except (TypeError, ValueError):
                    raise ValueError(f"{k}: expected a number, got {changes[k]!r}") from None
        return replace(self, **changes)


_SETTINGS = RewardSettings()


def configure(**settings: Any) -> RewardSettings:
    """Set the module-level defaults (every adapter reads them); returns the new settings.

    Keys: ``format_weight``, ``answer_weight``, ``grounding_weight`` (or ``weights=[f, a, g]``),
    ``beta``, ``class_aware``, ``empty_value``. ``configure()`` with no keys resets them.
    A framework's per-call keyword arguments (verl's ``reward_kwargs``, EasyR1's
    ``reward_function_kwargs``) override these defaults.
    """
    global _SETTINGS
    known = {f.name for f in fields(RewardSettings)} | {"weights", "reward_weights"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"configure: unknown settings {unknown} (known: {sorted(known)})")
    _SETTINGS = RewardSettings().merged(settings) if settings else RewardSettings()
    return _SETTINGS


def get_settings() -> RewardSettings:
    """The current module-level defaults."""
    return _SETTINGS


@dataclass
class Scores:
    """Per-row rewards (float64 arrays ``[B]``); ``total`` is the weighted sum."""

    format: np.ndarray
    answer: np.ndarray
    grounding: np.ndarray
    total: np.ndarray


_LOCAL = threading.local()
_GENERATION = [0]


def _rewards(key: tuple[Any, ...], beta: float, class_aware: bool, empty_value: float) -> Any:
    """The three reward functions of a group, built once per thread.

    ``get_tag_rewards``' functions share a one-entry parse cache (the last ``completions``
    object and its parse): two threads using the same functions could read each other's
    parse. verl 0.9.1's reward loop calls ``compute_score`` from a thread pool, so every
    thread gets its own functions.
    """
    cache = getattr(_LOCAL, "rewards", None)
    if cache is None or _LOCAL.generation != _GENERATION[0]:
        cache = _LOCAL.rewards = {}
        _LOCAL.generation = _GENERATION[0]
    k = (key, beta, class_aware, empty_value)
    fns = cache.get(k)
    if fns is None:
        if len(cache) >= 64:
            cache.clear()
        fns = cache[k] = _build_rewards(key, beta, class_aware, empty_value)
    return fns


def _clear_rewards() -> None:
    """Rebuild every thread's reward functions on their next use (tests patch the kernels)."""
    _GENERATION[0] += 1


def _build_rewards(key: tuple[Any, ...], beta: float, class_aware: bool, empty_value: float) -> Any:
    from tag_train.rewards import get_tag_rewards

    family, min_px, max_px, labels = key
    processor = None
    if min_px is not None or max_px is not None:  # the adapter reads the budget from it
        processor = SimpleNamespace(min_pixels=min_px, max_pixels=max_px)
    return get_tag_rewards(
        family,
        labels=None if labels is None else list(labels),
        beta=beta,
        class_aware=class_aware,
        empty_value=empty_value,
        processor=processor,
    )


def _as_text(x: Any) -> str:
    if isinstance(x, str):
        return x
    from tag_model.grounding import completion_text

    return completion_text(x)


def score_batch(
    completions: Sequence[Any],
    ground_truths: Sequence[Any],
    *,
    settings: RewardSettings | None = None,
    row_weights: np.ndarray | None = None,
) -> Scores:
    """Score ``completions[i]`` against ``ground_truths[i]`` (a :class:`GroundTruth`, its dict
    or its JSON string) with TAG's format, answer and grounding rewards.

    ``row_weights`` (``[B, 3]``, optional) overrides the settings' weights row by row.
    Raises ``ValueError`` naming the field for a malformed ground truth, or when the
    lengths differ. Bad completions never raise: they score 0.
    """
    s = settings or _SETTINGS
    n = len(completions)
    if len(ground_truths) != n:
        raise ValueError(f"got {n} completions but {len(ground_truths)} ground truths")
    gts: list[GroundTruth] = []
    for i, g in enumerate(ground_truths):
        try:
            gts.append(GroundTruth.from_any(g))
        except ValueError as exc:
            raise ValueError(f"row {i}: {exc}") from None
    texts = [_as_text(c) for c in completions]
    fmt, ans, grd = (np.zeros(n, dtype=np.float64) for _ in range(3))
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, g in enumerate(gts):
        groups.setdefault(g.group_key, []).append(i)
    for key, idx in groups.items():
        f_fn, a_fn, g_fn = _rewards(key, float(s.beta), bool(s.class_aware), float(s.empty_value))
        sub = texts if len(idx) == n else [texts[i] for i in idx]  # one list object: one parse
        rows = gts if len(idx) == n else [gts[i] for i in idx]
        f = f_fn(sub)
        a = a_fn(sub, label=[g.label for g in rows])
        r = g_fn(
            sub,
            activated=[g.activated for g in rows],
            image_size=[g.image_size for g in rows],
        )
        fmt[idx] = f
        ans[idx] = [0.0 if v is None else v for v in a]  # labels are validated: never None
        grd[idx] = r
    # the rewards are 0..1 by construction; guard the sum against a NaN from any future path
    for arr in (fmt, ans, grd):
        np.nan_to_num(arr, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    if row_weights is None:
        w = np.array([s.format_weight, s.answer_weight, s.grounding_weight], dtype=np.float64)
        total = w[0] * fmt + w[1] * ans + w[2] * grd
    else:
        w = np.asarray(row_weights, dtype=np.float64).reshape(n, 3)
        total = w[:, 0] * fmt + w[:, 1] * ans + w[:, 2] * grd
    return Scores(format=fmt, answer=ans, grounding=grd, total=total)


def row_weights(settings: RewardSettings, extras: Sequence[Any] | None) -> np.ndarray | None:
    """``[B, 3]`` weights where some row's extra info sets its own (``format_weight``, ...,
    or ``weights``), else ``None`` (the settings' weights for every row)."""
    if extras is None:
        return None
    keys = ("format_weight", "answer_weight", "grounding_weight", "weights", "reward_weights")
    if not any(isinstance(e, Mapping) and any(k in e for k in keys) for e in extras):
        return None
    out = np.empty((len(extras), 3), dtype=np.float64)
    for i, e in enumerate(extras):
        r = settings.merged({k: e[k] for k in keys if k in e} if isinstance(e, Mapping) else None)
        out[i] = (r.format_weight, r.answer_weight, r.grounding_weight)
    return out
