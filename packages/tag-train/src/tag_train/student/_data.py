"""Trace dataset -> NumPy training arrays for the student.

A trace dataset (``tag-train traces``; ``datasets.load_from_disk``) carries, per kept face,
the image, the teacher's kept answer (``label``: rejection sampling kept only traces whose
answer equals it), the activated list (``{au, prob, box}``, image pixels) and, when the source
had them, the 68 landmarks the detector used. The student's targets:

* ``label``: index into the label set;
* ``au``: ``[A]`` the activated list's probability for each AU of the region table (``0`` for
  an AU not in the list), ``table.aus`` order;
* ``landmarks``: ``[68, 2]`` normalised to ``[0, 1]`` of the image (``lm_mask`` 0 where absent);
* ``boxes``: ``[R, 4]`` normalised region boxes: from the landmarks through
  :func:`tag_kernels.landmarks_to_regions` (every region), else the activated boxes of their
  regions (``box_mask`` says which rows are known).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["StudentData", "dataset_labels", "images_to_array", "load_student_data"]


@dataclass
class StudentData:
    """Arrays of one split; every array has the faces on axis 0."""

    images: np.ndarray  # uint8 [N, S, S, 3]
    image_size: np.ndarray  # float32 [N, 2] original (w, h)
    label: np.ndarray  # int32 [N]
    au: np.ndarray  # float32 [N, A]
    landmarks: np.ndarray  # float32 [N, 68, 2] normalised
    lm_mask: np.ndarray  # float32 [N]
    boxes: np.ndarray  # float32 [N, R, 4] normalised
    box_mask: np.ndarray  # float32 [N, R]
    soft_label: np.ndarray | None = None  # float32 [N, C]: a teacher VLM's answer distribution
    activated: list[list[dict[str, Any]]] | None = None  # the reference lists (pixels)

    def __len__(self) -> int:
        return len(self.label)

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """One batch as a dict of arrays."""
        out = {
            "images": self.images[idx],
            "image_size": self.image_size[idx],
            "label": self.label[idx],
            "au": self.au[idx],
            "landmarks": self.landmarks[idx],
            "lm_mask": self.lm_mask[idx],
            "boxes": self.boxes[idx],
            "box_mask": self.box_mask[idx],
        }
        if self.soft_label is not None:
            out["soft_label"] = self.soft_label[idx]
        return out

    def subset(self, idx: np.ndarray) -> StudentData:
        return StudentData(
            **{k: v for k, v in self.take(idx).items() if k != "soft_label"},
            soft_label=None if self.soft_label is None else self.soft_label[idx],
            activated=None if self.activated is None else [self.activated[i] for i in idx],
        )


def dataset_labels(path: str | os.PathLike[str], ds: Any = None) -> tuple[str, ...]:
    """The label set of a trace dataset: its ``tag_settings.json``, else its sorted labels."""
    from tag_model.backbones import load_tag_settings

    settings = load_tag_settings(Path(path))
    if settings is not None and settings.labels:
        return tuple(settings.labels)
    if ds is None:
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
    return tuple(sorted(set(ds["label"])))


def images_to_array(images: Any, size: int) -> tuple[np.ndarray, np.ndarray]:
    """PIL images (or ``[H, W, 3]`` arrays) -> ``(uint8[N, size, size, 3], float32[N, 2] (w, h))``.

    Each image is resized (bilinear) to ``size x size``; the original sizes are kept so that
    the student's normalised outputs map back to each image's pixels.
    """
    from PIL import Image

    out = np.empty((len(images), size, size, 3), np.uint8)
    wh = np.empty((len(images), 2), np.float32)
    for i, im in enumerate(images):
        if not isinstance(im, Image.Image):
            im = Image.fromarray(np.asarray(im, np.uint8))
        im = im.convert("RGB")
        wh[i] = im.size
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(im, np.uint8)
    return out, wh


def load_student_data(
    path: str | os.PathLike[str],
    labels: tuple[str, ...],
    image_size: int,
    *,
    ds: Any = None,
    limit: int | None = None,
) -> StudentData:
    """Read a trace dataset (``load_from_disk(path)``, or ``ds``) into :class:`StudentData`.

    Rows whose label is not in ``labels`` are dropped.

    Raises:
        ValueError: the dataset lacks the ``image``, ``label`` or ``activated`` column.
    """
    from tag_kernels import IBUG68_REGIONS, landmarks_to_regions

    if ds is None:
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
    missing = [c for c in ("image", "label", "activated") if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{path}: not a trace dataset (no {', '.join(missing)} column); build one with "
            "`tag-train traces`"
        )
    keep = [i for i, lab in enumerate(ds["label"]) if lab in labels]
    if limit is not None:
        keep = keep[:limit]
    ds = ds.select(keep)
    table = IBUG68_REGIONS
    col = {au: j for j, au in enumerate(table.aus)}
    n, r_count = len(ds), len(table)
    images, wh = images_to_array(ds["image"], image_size)
    label = np.asarray([labels.index(lab) for lab in ds["label"]], np.int32)
    au = np.zeros((n, len(table.aus)), np.float32)
    boxes = np.zeros((n, r_count, 4), np.float32)
    box_mask = np.zeros((n, r_count), np.float32)
    activated = [list(a) for a in ds["activated"]]
    for i, acts in enumerate(activated):
        for a in acts:
            if a["au"] in col:
                au[i, col[a["au"]]] = a["prob"]
                r = table.region_of(a["au"])
                boxes[i, r] = a["box"]
                box_mask[i, r] = 1.0
    lms = np.full((n, 68, 2), np.nan, np.float32)
    if "landmarks" in ds.column_names:
        for i, lm in enumerate(ds["landmarks"]):
            if lm is not None:
                lms[i] = np.asarray(lm, np.float32)[:68]
    lm_mask = np.isfinite(lms).all(axis=(1, 2)).astype(np.float32)
    if lm_mask.any():
        have = lm_mask > 0
        regions = np.asarray(
            landmarks_to_regions(np.nan_to_num(lms[have]), wh[have], table, backend="torch")
        )
        boxes[have] = regions
        box_mask[have] = 1.0
    boxes /= np.concatenate([wh, wh], axis=1)[:, None, :]
    lms = np.where(lm_mask[:, None, None] > 0, lms / wh[:, None, :], 0.0).astype(np.float32)
    return StudentData(
        images=images,
        image_size=wh,
        label=label,
        au=au,
        landmarks=lms,
        lm_mask=lm_mask,
        boxes=boxes.astype(np.float32),
        box_mask=box_mask,
        activated=[
            [{"au": int(a["au"]), "prob": float(a["prob"]), "box": list(a["box"])} for a in acts]
            for acts in activated
        ],
    )
