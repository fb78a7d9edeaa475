"""The TAG *activated list*: top-K detected AUs, each with a probability and a region box.

Built from an AU detector's probabilities, the face's iBUG-68 landmarks,
:func:`tag_kernels.landmarks_to_regions` (region boxes in image pixels) and
:func:`tag_kernels.au_reward.activated_list` (threshold, sort, top-K). AUs that the region
table does not cover (``table.aus``) cannot be grounded and are left out; AUs of the table
that the detector did not report count as probability 0.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from functools import reduce
from itertools import chain
from operator import iconcat, itemgetter
from typing import Any, NamedTuple

import numpy as np
from tag_kernels import IBUG68_REGIONS, RegionTable, landmarks_to_regions
from tag_kernels.au_reward import activated_list

__all__ = ["ActivatedAU", "build_activated_list", "build_activated_lists", "pack_activated"]


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


# ----------------------------------------------------------------------------- padding


def _entry(e: Any) -> tuple[int, float, Any]:
    if isinstance(e, dict):
        return e["au"], e["prob"], e["box"]
    au = getattr(e, "au", None)
    if au is not None:
        return au, e.prob, e.box
    return e[0], e[1], e[2]


_AU_OF = itemgetter("au")
_PROB_OF = itemgetter("prob")
_BOX_OF = itemgetter("box")


def _where(activated: Sequence[Sequence[Any]], flat_index: int) -> str:
    """``activated[i][j]`` of the ``flat_index``-th entry (for error messages)."""
    for i, row in enumerate(activated):
        if flat_index < len(row):
            return f"activated[{i}][{flat_index}]"
        flat_index -= len(row)
    return "activated"


def _flat_boxes(activated: Sequence[Sequence[Any]], box_f: Sequence[Any], total: int) -> np.ndarray:
    """``float32[total, 4]`` from the entries' boxes (4 numbers each, else a ``ValueError``)."""
    try:
        lens = set(map(len, box_f))
    except TypeError:
        lens = set()
    if lens != {4}:
        bad = next(j for j, b in enumerate(box_f) if not (hasattr(b, "__len__") and len(b) == 4))
        raise ValueError(
            f"pack_activated: {_where(activated, bad)} box must be 4 numbers (x1, y1, x2, y2), "
            f"got {box_f[bad]!r}"
        )
    try:  # one C-level flatten and one struct pack (~2x np.fromiter over a chain)
        raw = struct.Struct(f"{4 * total}d").pack(*reduce(iconcat, box_f, []))
        return np.frombuffer(raw, dtype=np.float64).astype(np.float32).reshape(total, 4)
    except (struct.error, TypeError):  # not plain numbers: let NumPy convert or say why
        try:
            return np.asarray(box_f, dtype=np.float32).reshape(total, 4)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"pack_activated: boxes must be 4 numbers each: {exc}") from exc


def pack_activated(activated: Sequence[Sequence[Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad an ``activated`` column into ``(ref_boxes[B,M,4] f32, ref_au[B,M] i32, ref_prob[B,M] f32)``.

    Entries are dicts ``{au, prob, box}``, ``ActivatedAU`` or ``(au, prob, box)`` tuples;
    padding has ``au = -1``, ``prob = 0`` and a zero box. One flat pass per field, one scatter
    (none when every row has ``M`` entries).

    Raises:
        ValueError: an entry is not one of the above, or a box is not 4 numbers.
    """
    n = len(activated)
    counts = np.fromiter(map(len, activated), dtype=np.int64, count=n)
    m = max(1, int(counts.max()) if n else 1)
    total = int(counts.sum())
    if not total:
        return (
            np.zeros((n, m, 4), dtype=np.float32),
            np.full((n, m), -1, dtype=np.int32),
            np.zeros((n, m), dtype=np.float32),
        )
    entries = list(chain.from_iterable(activated))
    try:  # the datasets column, dicts {au, prob, box}: one C-level pass per field
        au = np.fromiter(map(_AU_OF, entries), dtype=np.int32, count=total)
        prob = np.fromiter(map(_PROB_OF, entries), dtype=np.float32, count=total)
        box_f: Sequence[Any] = list(map(_BOX_OF, entries))
    except (TypeError, KeyError, IndexError):  # ActivatedAU, tuples, or mixed
        try:
            au_f, prob_f, box_f = zip(*map(_entry, entries))
        except (TypeError, KeyError, IndexError, AttributeError) as exc:
            raise ValueError(
                "pack_activated: entries must be dicts {au, prob, box}, ActivatedAU or "
                f"(au, prob, box) tuples: {exc!r}"
            ) from exc
        au = np.asarray(au_f, dtype=np.int32)
        prob = np.asarray(prob_f, dtype=np.float32)
    flat = _flat_boxes(activated, box_f, total)
    if total == n * m:  # every row full: no padding, no scatter
        return flat.reshape(n, m, 4), au.reshape(n, m), prob.reshape(n, m)
    boxes = np.zeros((n, m, 4), dtype=np.float32)
    aus = np.full((n, m), -1, dtype=np.int32)
    probs = np.zeros((n, m), dtype=np.float32)
    mask = np.arange(m)[None, :] < counts[:, None]  # row-major order == flattening order
    aus[mask] = au
    probs[mask] = prob
    boxes[mask] = flat
    return boxes, aus, probs
