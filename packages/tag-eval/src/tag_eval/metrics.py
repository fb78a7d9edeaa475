"""Classification metrics and confidence intervals.

All functions are plain NumPy. A prediction of ``-1`` means "no answer" (the trace did not
parse or named no known emotion): it counts as wrong for accuracy and as a false negative of
the true class for F1, but is no false positive of any class. It is shown in the confusion
matrix's separate ``unanswered`` column.

>>> m = classification_metrics([0, 0, 1, 1], [0, 1, 1, -1], ("a", "b"))
>>> m["accuracy"], m["confusion"], m["unanswered"]
(0.5, [[1, 1], [0, 1]], [0, 1])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "MeanCI",
    "accuracy",
    "bootstrap_ci",
    "classification_metrics",
    "confusion_matrix",
    "macro_f1",
    "per_class_accuracy",
    "per_class_f1",
    "wilson_ci",
]


def _as_ids(labels: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray, n: int):
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    p = np.asarray(preds, dtype=np.int64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions differ in length: {y.size} vs {p.size}")
    if y.size and (y.min() < 0 or y.max() >= n):
        bad = int(y[(y < 0) | (y >= n)][0])
        raise ValueError(f"label id {bad} is outside the label space of {n} classes")
    if p.size and (p.min() < -1 or p.max() >= n):
        bad = int(p[(p < -1) | (p >= n)][0])
        raise ValueError(f"prediction id {bad} is outside [-1, {n - 1}]")
    return y, p


def confusion_matrix(
    labels: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Confusion counts.

    Returns ``(cm[C, C], unanswered[C])``: ``cm[i, j]`` counts samples of true class ``i``
    predicted as ``j``; ``unanswered[i]`` counts samples of class ``i`` with prediction ``-1``.
    """
    y, p = _as_ids(labels, preds, num_classes)
    answered = p >= 0
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y[answered], p[answered]), 1)
    unanswered = np.bincount(y[~answered], minlength=num_classes).astype(np.int64)
    return cm, unanswered


def accuracy(labels: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray) -> float:
    """Fraction of exact matches (``-1`` is always wrong); ``nan`` for no samples."""
    y = np.asarray(labels).reshape(-1)
    p = np.asarray(preds).reshape(-1)
    if y.size == 0:
        return float("nan")
    return float(np.mean(y == p))


def per_class_accuracy(
    labels: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """Recall of each class, ``float[C]`` (``nan`` for a class with no samples)."""
    cm, unanswered = confusion_matrix(labels, preds, num_classes)
    support = cm.sum(1) + unanswered
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def per_class_f1(
    labels: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """F1 of each class, ``float[C]``.

    A class that is neither present nor predicted has F1 ``nan`` (left out of the macro mean);
    a class present or predicted but never hit has F1 ``0``.
    """
    cm, unanswered = confusion_matrix(labels, preds, num_classes)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp + unanswered
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


def macro_f1(
    labels: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray, num_classes: int
) -> float:
    """Unweighted mean of :func:`per_class_f1` over classes present or predicted."""
    f1 = per_class_f1(labels, preds, num_classes)
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan")


def _nan_to_none(x: float) -> float | None:
    return None if (x is None or not math.isfinite(x)) else float(x)


def classification_metrics(
    labels: Sequence[int] | np.ndarray,
    preds: Sequence[int] | np.ndarray,
    names: Sequence[str],
) -> dict[str, Any]:
    """Every classification metric as a JSON-ready dict.

    Keys: ``n``, ``accuracy``, ``macro_f1``, ``answered_rate``, ``per_class`` (name ->
    ``{accuracy, f1, support}``), ``labels`` (the names, row/column order), ``confusion``
    (``int[C][C]``, rows = true, columns = predicted) and ``unanswered`` (``int[C]``).
    ``nan`` values become ``None`` so the JSON stays valid.
    """
    n_cls = len(names)
    y, p = _as_ids(labels, preds, n_cls)
    cm, unanswered = confusion_matrix(y, p, n_cls)
    pca = per_class_accuracy(y, p, n_cls)
    f1 = per_class_f1(y, p, n_cls)
    support = cm.sum(1) + unanswered
    return {
        "n": int(y.size),
        "accuracy": _nan_to_none(accuracy(y, p)),
        "macro_f1": _nan_to_none(macro_f1(y, p, n_cls)),
        "answered_rate": _nan_to_none(float(np.mean(p >= 0)) if p.size else float("nan")),
        "labels": list(names),
        "per_class": {
            name: {
                "accuracy": _nan_to_none(float(pca[i])),
                "f1": _nan_to_none(float(f1[i])),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "confusion": cm.tolist(),
        "unanswered": unanswered.tolist(),
    }


class MeanCI(dict):
    """``{"mean", "low", "high", "n", "level"}``; a dict so it serialises to JSON as is."""

    @property
    def mean(self) -> float | None:
        return self["mean"]

    @property
    def low(self) -> float | None:
        return self["low"]

    @property
    def high(self) -> float | None:
        return self["high"]


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> MeanCI:
    """Mean of ``values`` with a percentile-bootstrap confidence interval.

    ``nan`` entries (undefined per-sample metrics) are dropped first; ``n`` is the number
    kept. Resampling is one vectorised draw of ``int[n_boot, n]`` indices from
    ``numpy.random.default_rng(seed)``, so the interval is deterministic under ``seed``.
    With no defined values, everything but ``n`` is ``None``.

    >>> ci = bootstrap_ci([0.0, 1.0, 1.0, 1.0], seed=0)
    >>> ci["mean"], ci["low"] <= 0.75 <= ci["high"]
    (0.75, True)
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return MeanCI(mean=None, low=None, high=None, n=0, level=level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    mean = float(x.mean())
    # The percentile interval of a mean always brackets it up to float rounding; clamp so
    # that the documented invariant low <= mean <= high holds exactly.
    return MeanCI(
        mean=mean, low=float(min(low, mean)), high=float(max(high, mean)), n=n, level=level
    )


def wilson_ci(successes: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; ``(nan, nan)`` for ``n == 0``.

    >>> lo, hi = wilson_ci(5, 10)
    >>> round(lo, 3), round(hi, 3)
    (0.237, 0.763)
    """
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    phat = successes / n
    denom = 1.0 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high
