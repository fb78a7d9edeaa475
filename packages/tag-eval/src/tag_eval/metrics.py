"""Classification metrics, confidence intervals, and the scoring of a whole run.

``MeanCI`` and ``bootstrap_ci`` live in :mod:`tag_model.stats` (re-exported here).

The metric functions are plain NumPy; :func:`compute_metrics` scores a run directory
(classification, faithfulness, parse rates, timing) and :func:`plot_confusion` draws its
confusion matrix. A prediction of ``-1`` means "no answer" (the trace did not
parse or named no known emotion): it counts as wrong for accuracy and as a false negative of
the true class for F1, but is no false positive of any class. It is shown in the confusion
matrix's separate ``unanswered`` column.

>>> m = classification_metrics([0, 0, 1, 1], [0, 1, 1, -1], ("a", "b"))
>>> m["accuracy"], m["confusion"], m["unanswered"]
(0.5, [[1, 1], [0, 1]], [0, 1])
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tag_model.stats import MeanCI, bootstrap_ci

from tag_eval._records import METRICS_NAME, SAMPLES_NAME, EvalInputError, load_run, write_json

__all__ = [
    "MeanCI",
    "accuracy",
    "bootstrap_ci",
    "classification_metrics",
    "compute_metrics",
    "confusion_matrix",
    "macro_f1",
    "per_class_accuracy",
    "per_class_f1",
    "plot_confusion",
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


def compute_metrics(
    run_dir: str | os.PathLike[str],
    *,
    tau: float = 0.3,
    face_margin: float = 0.1,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Score every record of a run; writes ``metrics.json`` and ``confusion.png``.

    Classification (:func:`classification_metrics`, accuracy with a :func:`bootstrap_ci`),
    faithfulness (:mod:`tag_eval.faithfulness`), parse rates with the most common parse
    errors, the count and rate of completions that did not parse (``parse_failures``: each
    scores grounding F 0) and of rows whose activated list is empty (``empty_activated``),
    and timing.
    """
    from tag_eval.faithfulness import (  # it imports this module
        grounding_from_record,
        score_faithfulness,
        summarize_faithfulness,
        well_formed,
    )

    out = Path(run_dir)
    meta, records = load_run(out)
    names = meta["label_space"]["names"]
    if not records:
        raise EvalInputError(f"{out / SAMPLES_NAME}: no samples to score")
    y = [r["label_id"] for r in records]
    p = [r["prediction_id"] for r in records]
    cls = classification_metrics(y, p, names)
    cls["accuracy_ci"] = dict(
        bootstrap_ci([float(r["correct"]) for r in records], n_boot=n_boot, level=level, seed=seed)
    )
    scores = score_faithfulness(
        [grounding_from_record(r) for r in records], tau=tau, face_margin=face_margin
    )
    faith = summarize_faithfulness(scores, n_boot=n_boot, level=level, seed=seed)
    faith["face_margin"] = face_margin
    reasons: Counter[str] = Counter()
    for r in records:
        for reason in r["parse"]["reasons"]:
            reasons[re.sub(r"\d+", "N", str(reason))[:80]] += 1
    from tag_eval.run import normalize_prompt  # it imports this module

    wf = [well_formed(r.get("parse")) for r in records]
    faces = [r.get("landmarks") is not None for r in records]
    n_fail = len(records) - int(sum(wf))
    secs = [r["timing"]["seconds"] for r in records]
    new_tok = [r["timing"]["new_tokens"] for r in records]
    metrics = {
        "run": {k: meta.get(k) for k in ("model", "dataset", "split", "prompt", "seed", "family")},
        "label_space": meta["label_space"],
        "classification": cls,
        "faithfulness": faith,
        "parse": {
            "format_ok_rate": float(np.mean([r["parse"]["format_ok"] for r in records])),
            "answer_ok_rate": float(np.mean([r["parse"]["answer_ok"] for r in records])),
            # not a well-formed trace: grounding F 0 (see tag_eval.faithfulness.well_formed);
            # a zero-shot run is asked for no trace, so all of its completions count here
            "trace_expected": normalize_prompt(meta.get("prompt")) != "zeroshot",
            "parse_failures": n_fail,
            "parse_failure_rate": n_fail / len(records),
            "top_reasons": reasons.most_common(10),
            "faces_found": int(sum(faces)),
            # a face but no activated AU: grounding F is 0 or the kernel's empty value
            "empty_activated": int(
                sum(f and not r.get("activated") for f, r in zip(faces, records))
            ),
        },
        "timing": {
            "seconds_total": float(np.sum(secs)),
            "seconds_per_sample": float(np.mean(secs)),
            "new_tokens_per_second": float(np.sum(new_tok) / max(np.sum(secs), 1e-9)),
        },
        "per_sample_faithfulness": {r["id"]: scores.per_sample(i) for i, r in enumerate(records)},
    }
    skipped = meta.get("skipped_images") or {}
    metrics["skipped_images"] = len(skipped.get("missing", [])) + len(skipped.get("corrupt", []))
    write_json(out / METRICS_NAME, metrics)
    prompt = normalize_prompt(meta.get("prompt")) or "?"
    model = Path(str(meta.get("model"))).name
    title = f"{model} · {prompt} prompt — {meta.get('dataset')}"
    plot_confusion(cls, out / "confusion.png", title=title)
    return metrics


def plot_confusion(
    cls: Mapping[str, Any], path: str | os.PathLike[str], *, title: str = ""
) -> None:
    """Row-normalised confusion matrix with counts (plus an ``unanswered`` column) as a PNG."""
    from matplotlib.figure import Figure

    names = list(cls["labels"])
    cm = np.asarray(cls["confusion"], dtype=np.float64)
    un = np.asarray(cls["unanswered"], dtype=np.float64)[:, None]
    full = np.concatenate([cm, un], axis=1)
    rows = full.sum(1, keepdims=True)
    norm = np.divide(full, rows, out=np.zeros_like(full), where=rows > 0)
    c = len(names)
    fig = Figure(figsize=(1.0 + 0.8 * (c + 1), 1.0 + 0.7 * c), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(c + 1), [*names, "unanswered"], rotation=45, ha="right")
    ax.set_yticks(range(c), names)
    ax.set_xlabel("predicted (the diagonal is correct: higher is better)")
    ax.set_ylabel("true")
    acc = cls.get("accuracy")
    ax.set_title(
        f"{title}\naccuracy {acc:.3f}" if acc is not None and math.isfinite(acc) else title,
        fontsize=9,
    )
    for i in range(c):
        for j in range(c + 1):
            if full[i, j]:
                ax.text(
                    j,
                    i,
                    str(int(full[i, j])),
                    ha="center",
                    va="center",
                    color="white" if norm[i, j] > 0.5 else "black",
                    fontsize=8,
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path)
