"""Bootstrap confidence intervals: the one home for TAG's learning and quality claims.

``tag-eval`` reports every mean with :func:`bootstrap_ci`; the demo and its ablation compare
two arms with :func:`bootstrap_diff_ci` (paired: the same faces under two models; unpaired:
two sets of GRPO steps). Every draw is seeded, so intervals are reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MeanCI", "bootstrap_ci", "bootstrap_diff_ci"]


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


def _check(level: float, n_boot: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")


def _interval(means: np.ndarray, mean: float, n: int, level: float) -> MeanCI:
    if n < 2:  # one unit (per side) has no spread to resample: no interval, never a result
        return MeanCI(mean=mean, low=None, high=None, n=n, level=level)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    # The percentile interval of a mean brackets it up to float rounding; clamp so that the
    # documented invariant low <= mean <= high holds exactly.
    return MeanCI(
        mean=mean, low=float(min(low, mean)), high=float(max(high, mean)), n=n, level=level
    )


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
    _check(level, n_boot)
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return MeanCI(mean=None, low=None, high=None, n=0, level=level)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    return _interval(x[idx].mean(axis=1), float(x.mean()), n, level)


def bootstrap_diff_ci(
    after: Sequence[float] | np.ndarray,
    before: Sequence[float] | np.ndarray,
    *,
    paired: bool,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> MeanCI:
    """``mean(after) - mean(before)`` with a percentile-bootstrap confidence interval.

    ``paired=True``: ``after[i]`` and ``before[i]`` are the same unit (one face scored by two
    models); the pairs are resampled together, and a pair with a ``nan`` side is dropped.
    ``paired=False``: two independent samples (the first and the last fifth of a GRPO run),
    each resampled on its own; ``nan`` entries are dropped per side. ``n`` is the number of
    pairs, or the smaller side. A difference is a result when ``low > 0`` (or ``high < 0``).

    >>> ci = bootstrap_diff_ci([1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0], paired=True)
    >>> round(ci["mean"], 2), ci["low"] <= 0.5 <= ci["high"]
    (0.5, True)
    """
    _check(level, n_boot)
    a = np.asarray(after, dtype=np.float64).reshape(-1)
    b = np.asarray(before, dtype=np.float64).reshape(-1)
    rng = np.random.default_rng(seed)
    if paired:
        if a.shape != b.shape:
            raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
        keep = np.isfinite(a) & np.isfinite(b)
        d = a[keep] - b[keep]
        if d.size == 0:
            return MeanCI(mean=None, low=None, high=None, n=0, level=level)
        idx = rng.integers(0, d.size, size=(n_boot, d.size))
        return _interval(d[idx].mean(axis=1), float(d.mean()), int(d.size), level)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return MeanCI(mean=None, low=None, high=None, n=0, level=level)
    ma = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
    mb = b[rng.integers(0, b.size, size=(n_boot, b.size))].mean(axis=1)
    return _interval(ma - mb, float(a.mean() - b.mean()), int(min(a.size, b.size)), level)
