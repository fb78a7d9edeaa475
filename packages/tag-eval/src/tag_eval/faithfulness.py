"""Faithfulness of a model's AU grounding, scored against an AU detector.

For every sample the model's predicted ``(AU, box)`` pairs (image pixels) are compared with
the detector's *activated list* ``(AU, prob, box)`` built from the face landmarks:

``grounding_f``
    The AU-grounding F-score of :func:`tag_kernels.au_reward.au_grounding_reward`, computed
    for the whole batch in one call. A completion that is not a well-formed trace
    (:func:`well_formed`) scores 0 whatever the activated list holds; the kernel's
    ``empty_value`` (1 by default) applies only to a well-formed trace that names no box when
    the detector found no AU either.
``au_precision`` / ``au_recall``
    Set-level: claimed AUs (every non-zero AU the steps name) against activated AUs.
    Precision is undefined (``nan``) when nothing is claimed, recall when nothing is
    activated; undefined values are left out of the means (``n`` says how many remain).
``hallucination_rate``
    Fraction of predicted pairs that are hallucinated by any of:
    (a) the AU is claimed but not activated; (b) the box's IoU with the canonical region of
    its AU (:func:`tag_kernels.landmarks_to_regions`) is below ``tau``; (c) the box lies
    outside the face (less than ``outside_frac`` of its area inside the landmark bounding
    box grown by ``face_margin`` of the face size on each side). Each cause is also counted
    and reported as its own rate.
``consistency``
    1 when the AUs named in the final conclusion agree with the EMFACS prototype of the
    answered emotion (:func:`tag_model.au.consistent_with`), else 0; ``nan`` without an answer.

Samples without landmarks have no detector reference: their metrics are ``nan``. The summary
counts apart the samples whose completion did not parse and those whose activated list is
empty, so that neither hides in a mean.
Every mean comes with a seeded, vectorised bootstrap confidence interval
(:func:`tag_eval.metrics.bootstrap_ci`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np

from tag_eval.metrics import bootstrap_ci

__all__ = [
    "FAITHFULNESS_METRICS",
    "FaithfulnessScores",
    "SampleGrounding",
    "conclusion_aus",
    "grounding_from_record",
    "score_faithfulness",
    "summarize_faithfulness",
    "well_formed",
]

#: Per-sample metrics reported with a bootstrap interval, in display order.
FAITHFULNESS_METRICS: tuple[str, ...] = (
    "grounding_f",
    "au_precision",
    "au_recall",
    "hallucination_rate",
    "unactivated_au_rate",
    "region_miss_rate",
    "outside_face_rate",
    "consistency",
)

_CONCLUSION_RE = re.compile(r"final\s+conclusion\s*:(.*)", re.IGNORECASE)


def conclusion_aus(trace: str) -> list[int]:
    """AU numbers named on the trace's ``Final conclusion:`` line, in order, without repeats.

    AU mentions follow the trace grammar (:func:`tag_model.grounding.mentioned_aus`). This
    line-based reading needs no well-formed trace.

    >>> conclusion_aus("Final conclusion: Combined AU6 + AU12 indicate happiness.")
    [6, 12]
    >>> conclusion_aus("no conclusion here AU4")
    []
    """
    from tag_model.grounding import mentioned_aus

    out: dict[int, None] = {}
    for line in trace.splitlines():
        m = _CONCLUSION_RE.search(line)
        if m:
            out.update(dict.fromkeys(mentioned_aus(m.group(1))))
    return list(out)


def well_formed(parse: Mapping[str, Any] | None) -> bool:
    """Whether a record's ``parse`` entry describes a well-formed trace.

    Well formed: the trace grammar holds (``format_ok``), or its only complaint is
    ``NO_BOXED_STEP`` (a complete trace that grounds nothing, e.g. for a face with no active
    AU). A record that says ``well_formed`` itself is taken at its word; a record without a
    ``parse`` entry counts as well formed (hand-built records).

    >>> well_formed({"format_ok": False, "reasons": ["NO_BOXED_STEP at 0: no step"]})
    True
    >>> well_formed({"format_ok": False, "reasons": ["MISSING_ANSWER at 0: no <answer>"]})
    False
    """
    if parse is None:
        return True
    if "well_formed" in parse:
        return bool(parse["well_formed"])
    if parse.get("format_ok"):
        return True
    reasons = [str(r) for r in parse.get("reasons") or []]
    return bool(reasons) and all(r.startswith("NO_BOXED_STEP") for r in reasons)


@dataclass
class SampleGrounding:
    """Everything faithfulness needs about one sample (all boxes in image pixels).

    ``pred_au: int[K]`` and ``pred_boxes: float32[K, 4]`` are the model's pairs (AU ``0`` =
    a box with no AU named); ``ref_au: int[M]``, ``ref_prob: float[M]``,
    ``ref_boxes: float32[M, 4]`` the detector's activated list; ``landmarks: float[68, 2]``
    or ``None`` when no face was found; ``image_size`` is ``(w, h)``; ``well_formed`` is
    false when the completion did not parse as a trace (:func:`well_formed`).
    """

    pred_au: np.ndarray
    pred_boxes: np.ndarray
    ref_au: np.ndarray
    ref_prob: np.ndarray
    ref_boxes: np.ndarray
    landmarks: np.ndarray | None
    image_size: tuple[int, int]
    answer: str | None = None
    conclusion_aus: list[int] = field(default_factory=list)
    well_formed: bool = True

    def __post_init__(self) -> None:
        self.pred_au = np.asarray(self.pred_au, dtype=np.int64).reshape(-1)
        self.pred_boxes = np.asarray(self.pred_boxes, dtype=np.float32).reshape(-1, 4)
        self.ref_au = np.asarray(self.ref_au, dtype=np.int64).reshape(-1)
        self.ref_prob = np.asarray(self.ref_prob, dtype=np.float32).reshape(-1)
        self.ref_boxes = np.asarray(self.ref_boxes, dtype=np.float32).reshape(-1, 4)
        if self.landmarks is not None:
            self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(-1, 2)
        if len(self.pred_au) != len(self.pred_boxes):
            raise ValueError(
                f"pred_au has {len(self.pred_au)} entries but pred_boxes {len(self.pred_boxes)}"
            )
        if not (len(self.ref_au) == len(self.ref_prob) == len(self.ref_boxes)):
            raise ValueError(
                "activated list columns differ in length: "
                f"{len(self.ref_au)}, {len(self.ref_prob)}, {len(self.ref_boxes)}"
            )


def grounding_from_record(record: Mapping[str, Any]) -> SampleGrounding:
    """Build a :class:`SampleGrounding` from one per-sample JSONL record of ``tag-eval run``."""
    pairs = record.get("pred_pairs") or []
    act = record.get("activated") or []
    lm = record.get("landmarks")
    return SampleGrounding(
        pred_au=[int(p["au"]) for p in pairs],
        pred_boxes=np.asarray([p["box"] for p in pairs], dtype=np.float32).reshape(-1, 4),
        ref_au=[int(a["au"]) for a in act],
        ref_prob=[float(a["prob"]) for a in act],
        ref_boxes=np.asarray([a["box"] for a in act], dtype=np.float32).reshape(-1, 4),
        landmarks=None if lm is None else np.asarray(lm, dtype=np.float32),
        image_size=tuple(record.get("image_size") or (0, 0)),
        answer=record.get("prediction"),
        conclusion_aus=list(record.get("conclusion_aus") or []),
        well_formed=well_formed(record.get("parse")),
    )


@dataclass
class FaithfulnessScores:
    """Per-sample faithfulness, each a ``float64[N]`` (``nan`` = undefined) or ``int64[N]``.

    ``unparsed`` (``bool[N]``) marks samples with a detector reference whose completion did not
    parse (grounding F 0); ``empty_activated`` (``bool[N]``) those with a face but an empty
    activated list; ``empty_scored`` (``bool[N]``) those scored ``empty_value`` (a well-formed
    trace without boxes on an empty activated list).
    """

    grounding_f: np.ndarray
    au_precision: np.ndarray
    au_recall: np.ndarray
    hallucination_rate: np.ndarray
    unactivated_au_rate: np.ndarray
    region_miss_rate: np.ndarray
    outside_face_rate: np.ndarray
    consistency: np.ndarray
    n_pairs: np.ndarray
    n_unactivated_aus: np.ndarray
    n_region_miss: np.ndarray
    n_outside_face: np.ndarray
    n_hallucinated_pairs: np.ndarray
    tau: float = 0.3
    unparsed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    empty_activated: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    empty_scored: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def per_sample(self, i: int) -> dict[str, Any]:
        """Sample ``i`` as a JSON-ready dict (``nan`` -> ``None``)."""
        out: dict[str, Any] = {}
        for name in (
            *FAITHFULNESS_METRICS,
            "n_pairs",
            "n_unactivated_aus",
            "n_region_miss",
            "n_outside_face",
            "n_hallucinated_pairs",
        ):
            v = getattr(self, name)[i]
            if np.issubdtype(type(v), np.integer):
                out[name] = int(v)
            else:
                out[name] = None if not np.isfinite(v) else float(v)
        for name in ("unparsed", "empty_activated", "empty_scored"):
            arr = getattr(self, name)
            out[name] = bool(arr[i]) if len(arr) > i else False
        return out


def _face_boxes(samples: Sequence[SampleGrounding], margin: float) -> np.ndarray:
    """Landmark bounding boxes grown by ``margin`` x face size, ``float[B, 4]`` (nan: none)."""
    out = np.full((len(samples), 4), np.nan, np.float64)
    for i, s in enumerate(samples):
        if s.landmarks is None or len(s.landmarks) == 0:
            continue
        lo = s.landmarks.min(0)
        hi = s.landmarks.max(0)
        size = float(max(hi[0] - lo[0], hi[1] - lo[1]))
        out[i] = [
            lo[0] - margin * size,
            lo[1] - margin * size,
            hi[0] + margin * size,
            hi[1] + margin * size,
        ]
    return out


def _outside(boxes: np.ndarray, face: np.ndarray, min_inside: float) -> np.ndarray:
    """``bool[B, K]``: box has < ``min_inside`` of its area in ``face[B, 4]``."""
    f = face[:, None, :]
    ix = np.clip(
        np.minimum(boxes[..., 2], f[..., 2]) - np.maximum(boxes[..., 0], f[..., 0]), 0, None
    )
    iy = np.clip(
        np.minimum(boxes[..., 3], f[..., 3]) - np.maximum(boxes[..., 1], f[..., 1]), 0, None
    )
    area = np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(
        boxes[..., 3] - boxes[..., 1], 0, None
    )
    cx = (boxes[..., 0] + boxes[..., 2]) / 2
    cy = (boxes[..., 1] + boxes[..., 3]) / 2
    centre_in = (cx >= f[..., 0]) & (cx <= f[..., 2]) & (cy >= f[..., 1]) & (cy <= f[..., 3])
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(area > 0, ix * iy / np.maximum(area, 1e-12), centre_in.astype(float))
    return frac < min_inside


def _consistent(aus: Sequence[int], answer: str | None) -> float:
    if answer is None:
        return float("nan")
    from tag_model.au import consistent_with

    try:
        return float(bool(consistent_with(list(aus), answer)))
    except (KeyError, ValueError):
        return float("nan")


def score_faithfulness(
    samples: Sequence[SampleGrounding],
    *,
    tau: float = 0.3,
    face_margin: float = 0.1,
    outside_frac: float = 0.5,
    beta: float = 1.0,
    class_aware: bool = True,
    empty_value: float = 1.0,
) -> FaithfulnessScores:
    """Score every sample; see the module docstring for each metric's definition.

    The grounding F-score is one batched :func:`~tag_kernels.au_reward.au_grounding_reward`
    call over all samples (``beta``, ``class_aware``, ``empty_value`` are passed through; a
    sample that is not ``well_formed`` then scores 0) on
    both sides padded by :func:`~tag_model.activation.pack_activated`; region boxes come from
    one :func:`~tag_kernels.landmarks_to_regions` call and their IoUs from one
    :func:`~tag_kernels.elementwise_box_iou` call (0 for a degenerate box).
    """
    from tag_kernels import IBUG68_REGIONS, elementwise_box_iou, landmarks_to_regions
    from tag_kernels.au_reward import au_grounding_reward
    from tag_model.activation import pack_activated

    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    n = len(samples)
    nan = np.full(n, np.nan)
    zeros = np.zeros(n, np.int64)
    if n == 0:
        return FaithfulnessScores(
            *(nan.copy() for _ in range(8)), *(zeros.copy() for _ in range(5)), tau=tau
        )

    has_ref = np.array([s.landmarks is not None and len(s.landmarks) > 0 for s in samples])
    # Both sides padded to [B, K] / [B, M] (AU -1 = padding); pairs enter as (au, 1.0, box).
    pred_boxes, pred_au, _ = pack_activated(
        [list(zip(s.pred_au, repeat(1.0), s.pred_boxes)) for s in samples]
    )
    ref_boxes, ref_au, ref_prob = pack_activated(
        [list(zip(s.ref_au, s.ref_prob, s.ref_boxes)) for s in samples]
    )
    valid = pred_au >= 0  # [B, K]
    n_pairs = valid.sum(1).astype(np.int64)

    # (1) grounding F-score: one batched kernel call.
    res = au_grounding_reward(
        pred_boxes,
        pred_au,
        ref_boxes,
        ref_au,
        ref_prob,
        beta=beta,
        class_aware=class_aware,
        empty_value=empty_value,
    )
    parsed = np.array([bool(s.well_formed) for s in samples])
    reward = np.where(parsed, np.asarray(res.reward, dtype=np.float64), 0.0)
    grounding_f = np.where(has_ref, reward, np.nan)
    no_ref_aus = np.array([len(s.ref_au) == 0 for s in samples])
    empty_activated = has_ref & no_ref_aus
    # what the kernel saw as predictions: a box naming no AU (AU 0) is none when class-aware
    n_claims = (pred_au > 0).sum(1) if class_aware else n_pairs
    empty_scored = empty_activated & parsed & (n_claims == 0)

    # (2) set-level AU precision / recall and (a) claimed-but-not-activated AUs.
    au_precision = nan.copy()
    au_recall = nan.copy()
    unactivated_rate = nan.copy()
    n_unact = zeros.copy()
    unact_pair = np.zeros_like(valid)
    for i, s in enumerate(samples):
        claimed = {int(a) for a in s.pred_au if a > 0}
        activated = {int(a) for a in s.ref_au if a > 0}
        if not has_ref[i]:
            continue
        hit = len(claimed & activated)
        if claimed:
            au_precision[i] = hit / len(claimed)
            n_unact[i] = len(claimed - activated)
            unactivated_rate[i] = n_unact[i] / len(claimed)
        if activated:
            au_recall[i] = hit / len(activated)
        k = len(s.pred_au)
        unact_pair[i, :k] = (s.pred_au > 0) & ~np.isin(s.pred_au, list(activated))

    # (b) IoU of each box with its AU's canonical region (one landmarks_to_regions call).
    table = IBUG68_REGIONS
    table_aus = np.asarray(table.aus, dtype=np.int64)
    region_row = np.full(pred_au.shape, -1, np.int64)
    for au in np.unique(pred_au[pred_au > 0]):
        if int(au) in set(table_aus.tolist()):
            region_row[pred_au == au] = table.region_of(int(au))
    region_miss = np.zeros_like(valid)
    has_region = (region_row >= 0) & valid & has_ref[:, None]
    if has_ref.any():
        idx = np.flatnonzero(has_ref)
        lms = np.stack([samples[i].landmarks for i in idx]).astype(np.float32)
        sizes = np.asarray([samples[i].image_size for i in idx], dtype=np.float32)
        regions = np.asarray(landmarks_to_regions(lms, sizes, table), dtype=np.float32)
        rows = np.clip(region_row[idx], 0, None)
        gathered = np.take_along_axis(regions, rows[..., None].repeat(4, -1), axis=1)
        iou = elementwise_box_iou(pred_boxes[idx], gathered)
        region_miss[idx] = (iou < tau) & has_region[idx]
    n_region_pairs = has_region.sum(1)

    # (c) boxes outside the face.
    face = _face_boxes(samples, face_margin)
    outside = np.zeros_like(valid)
    if has_ref.any():
        outside[has_ref] = _outside(
            pred_boxes[has_ref].astype(np.float64), face[has_ref], outside_frac
        )
    outside &= valid

    halluc = (unact_pair | region_miss | outside) & valid
    with np.errstate(invalid="ignore", divide="ignore"):
        defined = has_ref & (n_pairs > 0)
        halluc_rate = np.where(defined, halluc.sum(1) / np.maximum(n_pairs, 1), np.nan)
        region_rate = np.where(
            has_ref & (n_region_pairs > 0),
            region_miss.sum(1) / np.maximum(n_region_pairs, 1),
            np.nan,
        )
        outside_rate = np.where(defined, outside.sum(1) / np.maximum(n_pairs, 1), np.nan)

    consistency = np.array([_consistent(s.conclusion_aus, s.answer) for s in samples])

    return FaithfulnessScores(
        grounding_f=grounding_f,
        au_precision=au_precision,
        au_recall=au_recall,
        hallucination_rate=halluc_rate.astype(np.float64),
        unactivated_au_rate=unactivated_rate,
        region_miss_rate=region_rate.astype(np.float64),
        outside_face_rate=outside_rate.astype(np.float64),
        consistency=consistency,
        n_pairs=n_pairs,
        n_unactivated_aus=n_unact,
        n_region_miss=region_miss.sum(1).astype(np.int64),
        n_outside_face=outside.sum(1).astype(np.int64),
        n_hallucinated_pairs=halluc.sum(1).astype(np.int64),
        tau=tau,
        unparsed=has_ref & ~parsed,
        empty_activated=empty_activated,
        empty_scored=empty_scored,
    )


def summarize_faithfulness(
    scores: FaithfulnessScores, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Mean and bootstrap interval of each metric in :data:`FAITHFULNESS_METRICS`.

    Also totals of the hallucination counts, and of the samples behind the grounding mean
    that are not ordinary: ``unparsed`` (completion did not parse: scored 0),
    ``empty_activated`` (a face but no activated AU) and ``empty_scored`` (of those, a
    well-formed trace without boxes, scored the kernel's ``empty_value``). JSON-ready.
    """
    out: dict[str, Any] = {
        name: dict(bootstrap_ci(getattr(scores, name), n_boot=n_boot, level=level, seed=seed))
        for name in FAITHFULNESS_METRICS
    }
    out["counts"] = {
        "pairs": int(scores.n_pairs.sum()),
        "unactivated_aus": int(scores.n_unactivated_aus.sum()),
        "region_miss": int(scores.n_region_miss.sum()),
        "outside_face": int(scores.n_outside_face.sum()),
        "hallucinated_pairs": int(scores.n_hallucinated_pairs.sum()),
        "unparsed": int(np.sum(scores.unparsed)),
        "empty_activated": int(np.sum(scores.empty_activated)),
        "empty_scored": int(np.sum(scores.empty_scored)),
    }
    out["tau"] = scores.tau
    return out
