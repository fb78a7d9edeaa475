"""The TAG *activated list*: top-K detected AUs, each with a probability and a region box.

Built from an AU detector's probabilities, the face's iBUG-68 landmarks,
:func:`tag_kernels.landmarks_to_regions` (region boxes in image pixels) and
:func:`tag_kernels.au_reward.activated_list` (threshold, sort, top-K). AUs that the region
table does not cover (``table.aus``) cannot be grounded and are left out; AUs of the table
that the detector did not report count as probability 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from tag_kernels import IBUG68_REGIONS, RegionTable, landmarks_to_regions
from tag_kernels.au_reward import activated_list

__all__ = ["ActivatedAU", "build_activated_list", "build_activated_lists"]


class ActivatedAU(NamedTuple):
    """One activated AU: its FACS number, probability and region box (xyxy image pixels)."""

    au: int
    prob: float
    box: tuple[float, float, float, float]


def _prob_matrix(au_probs: Sequence[Mapping[int, float]], table: RegionTable) -> np.ndarray:
    col = {au: j for j, au in enumerate(table.aus)}
    out = np.zeros((len(au_probs), len(table.aus)), dtype=np.float32)
    for b, probs in enumerate(au_probs):
        for au, p in probs.items():
            j = col.get(int(au))
            if j is None:
                continue
            v = float(p)
            out[b, j] = v if np.isfinite(v) else np.nan  # NaN is never activated
    return out


def build_activated_lists(
    landmarks: np.ndarray,
    image_size: np.ndarray | Sequence[int] | Sequence[Sequence[int]],
    au_probs: Sequence[Mapping[int, float]],
    *,
    top_k: int = 6,
    threshold: float = 0.5,
    table: RegionTable = IBUG68_REGIONS,
) -> list[list[ActivatedAU]]:
    """Batched :func:`build_activated_list`.

    Args:
        landmarks: ``float[B, 68, 2]`` iBUG-68 points in image pixels.
        image_size: ``(w, h)`` shared by all faces, or ``[B, 2]``.
        au_probs: ``B`` dicts AU -> probability (e.g. from an ``AUDetector``).
        top_k, threshold: keep at most ``top_k`` AUs with ``prob >= threshold``.
        table: region recipes (default :data:`tag_kernels.IBUG68_REGIONS`).

    Returns:
        ``B`` lists of :class:`ActivatedAU`, each sorted by descending probability (ties to
        the smaller AU number). A face with degenerate landmarks yields zero-area boxes,
        which are dropped, so its list may be shorter (never an error).
    """
    lm = np.ascontiguousarray(landmarks, dtype=np.float32)
    if lm.ndim != 3 or lm.shape[2] != 2:
        raise ValueError(f"landmarks must be [B, 68, 2], got shape {lm.shape}")
    B = lm.shape[0]
    if len(au_probs) != B:
        raise ValueError(f"au_probs has {len(au_probs)} entries for {B} faces")
    size = np.asarray(image_size, dtype=np.float32)
    if size.shape == (2,):
        size = np.broadcast_to(size, (B, 2))
    if size.shape != (B, 2):
        raise ValueError(f"image_size must be (w, h) or [B, 2], got shape {size.shape}")
    size = np.ascontiguousarray(size)
    boxes = landmarks_to_regions(lm, size, table)
    au_ids, probs, out_boxes = activated_list(
        _prob_matrix(au_probs, table), boxes, table, top_k=int(top_k), threshold=float(threshold)
    )
    result: list[list[ActivatedAU]] = []
    for b in range(B):
        row: list[ActivatedAU] = []
        for k in range(au_ids.shape[1]):
            au = int(au_ids[b, k])
            if au < 0:
                continue
            box = tuple(float(v) for v in out_boxes[b, k])
            if box[2] <= box[0] or box[3] <= box[1]:
                continue  # degenerate region (bad landmarks or fully clamped): not groundable
            row.append(ActivatedAU(au, float(probs[b, k]), box))  # type: ignore[arg-type]
        result.append(row)
    return result


def build_activated_list(
    landmarks: np.ndarray,
    image_size: Sequence[int] | np.ndarray,
    au_probs: Mapping[int, float],
    *,
    top_k: int = 6,
    threshold: float = 0.5,
    table: RegionTable = IBUG68_REGIONS,
) -> list[ActivatedAU]:
    """The activated list of one face.

    Args:
        landmarks: ``float[68, 2]`` iBUG-68 points in image pixels.
        image_size: ``(w, h)`` in pixels (boxes are clamped to it).
        au_probs: AU -> probability in [0, 1].
        top_k, threshold: keep at most ``top_k`` AUs with ``prob >= threshold``.

    >>> from tag_model.synth import SynthFACS
    >>> s = SynthFACS(seed=0).sample(3)
    >>> acts = build_activated_list(s.landmarks, s.image.size, {12: 0.9, 6: 0.7, 4: 0.1})
    >>> [(a.au, round(a.prob, 1)) for a in acts]
    [(12, 0.9), (6, 0.7)]
    """
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.shape[-2:] != (68, 2) or lm.ndim != 2:
        raise ValueError(f"landmarks must be [68, 2], got shape {lm.shape}")
    return build_activated_lists(
        lm[None], tuple(image_size), [au_probs], top_k=top_k, threshold=threshold, table=table
    )[0]
