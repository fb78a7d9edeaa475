"""RAF-DB (basic emotion subset) reader."""

from __future__ import annotations

import os
from pathlib import Path

import datasets as hf

from tag_model.au import RAFDB

from ._common import (
    DatasetFormatError,
    LabelSpaceArg,
    LoadReport,
    Record,
    build_dataset,
    resolve_inside,
    resolve_label_space,
    restrict_to_space,
)
from ._landmarks import read_rafdb_landmarks

__all__ = ["RAFDB_LABEL_FILE", "load_rafdb"]

RAFDB_LABEL_FILE = "EmoLabel/list_patition_label.txt"
_SPLITS = {"train": "train", "training": "train", "test": "test", "all": "all"}


def load_rafdb(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    aligned: bool = True,
    label_space: LabelSpaceArg = None,
    skip_missing: bool = False,
    verify_images: bool = True,
    return_report: bool = False,
) -> hf.Dataset | tuple[hf.Dataset, LoadReport]:
    """Read RAF-DB basic into a ``datasets.Dataset``.

    Layout (as distributed)::

        root/EmoLabel/list_patition_label.txt   # "train_00001.jpg 5" per line
        root/Image/aligned/train_00001_aligned.jpg
        root/Image/original/train_00001.jpg

    Label codes 1-7 are surprise, fear, disgust, happiness, sadness, anger, neutral
    (:data:`tag_model.au.RAFDB`); the split is the file-name prefix (``train_``/``test_``).
    With ``aligned=True`` each image is ``Image/aligned/<stem>_aligned.jpg``; when that file is
    missing but ``Image/original/<name>`` exists, the original is used instead and the row is
    listed in ``report.fallback_images`` (the original is the uncropped photo, so it differs
    in size and framing from the 100x100 aligned crops). ``aligned=False`` reads originals.

    Landmarks: RAF-DB ships no 68-point landmarks, so ``landmarks`` is None unless the root
    holds a sidecar (SynthFACS's ``Annotation/synthfacs.npz`` or ``EmoLabel/landmarks_68.csv``,
    see :func:`read_rafdb_landmarks`), whose points are in the pixels of the aligned image.

    Args:
        root: dataset root.
        split: ``"train"``, ``"test"`` or ``"all"``.
        label_space: the label space of ``label_id`` (a name, a :class:`LabelSpace` or a list
            of labels); default RAF-DB's seven classes. Rows whose label is outside it are
            dropped and counted in ``report.dropped`` (``not_in_label_space:<label>``).
        skip_missing: skip (and report) missing/corrupt images instead of raising
            :class:`DatasetImageError`.
        verify_images: decode every image once to detect corrupt files (set False on slow disks
            to only check that files exist).
        return_report: also return the :class:`LoadReport`.

    Returns:
        ``datasets.Dataset`` with columns ``image, label, label_id, landmarks, source, path``
        (``path`` relative to ``root``), or ``(dataset, report)``.

    Raises:
        DatasetFormatError: a malformed line (file, 1-based line number, value).
        UnsafePathError: an image name that escapes ``root``.
        DatasetImageError: missing or corrupt images and ``skip_missing=False``.
    """
    key = split.strip().lower()
    if key not in _SPLITS:
        raise ValueError(f"RAF-DB split must be 'train', 'test' or 'all', got {split!r}")
    want = _SPLITS[key]
    root_p = Path(root).resolve()
    label_file = root_p / RAFDB_LABEL_FILE
    if not label_file.is_file():
        raise FileNotFoundError(f"RAF-DB label file not found: {label_file}")
    report = LoadReport(source="rafdb", split=want, files=[str(label_file)])
    landmarks = read_rafdb_landmarks(root_p)
    if landmarks is not None:
        report.files.extend(str(p) for p in landmarks.paths)
    records: list[Record] = []
    with label_file.open(encoding="utf-8-sig") as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = raw.strip()
            if not text:
                continue
            parts = text.split()
            if len(parts) != 2:
                raise DatasetFormatError(
                    label_file, lineno, text, "expected '<image name> <label code 1-7>'"
                )
            name, code_text = parts
            prefix = name.split("_", 1)[0].lower()
            if prefix not in ("train", "test"):
                raise DatasetFormatError(
                    label_file, lineno, name, "image name must start with 'train_' or 'test_'"
                )
            try:
                code = int(code_text)
                label = RAFDB.name_of_code(code)
            except (ValueError, KeyError):
                raise DatasetFormatError(
                    label_file, lineno, code_text, "label code must be an integer 1-7"
                ) from None
            if want != "all" and prefix != want:
                continue
            report.rows += 1
            stem, _ext = os.path.splitext(name)
            orig_abs, orig_rel = resolve_inside(
                root_p, f"Image/original/{name}", file=label_file, line=lineno
            )
            if aligned:
                img_abs, img_rel = resolve_inside(
                    root_p, f"Image/aligned/{stem}_aligned.jpg", file=label_file, line=lineno
                )
                if not img_abs.exists() and orig_abs.exists():
                    report.fallback_images.append(orig_rel)
                    img_abs, img_rel = orig_abs, orig_rel
            else:
                img_abs, img_rel = orig_abs, orig_rel
            lm = landmarks.get(img_rel) if landmarks is not None else None
            records.append(
                Record(
                    image=str(img_abs),
                    label=label,
                    label_id=RAFDB.id_of(label),
                    landmarks=lm,
                    path=img_rel,
                    line=lineno,
                    check=img_abs,
                )
            )
    space = resolve_label_space(label_space, RAFDB)
    records = restrict_to_space(records, space, report)
    ds = build_dataset(
        records,
        space=space,
        report=report,
        root=root_p,
        skip_missing=skip_missing,
        verify_images=verify_images,
        extra_features=None,
    )
    return (ds, report) if return_report else ds
