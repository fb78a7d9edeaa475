"""Generic sources: one folder per class, or a CSV of image paths and labels."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import datasets as hf
import numpy as np

from tag_model.au import canonical_label
from tag_model.faces import parse_affectnet_landmarks

from ._common import (
    CANONICAL,
    DatasetFormatError,
    LabelSpaceArg,
    LoadReport,
    Record,
    build_dataset,
    resolve_inside,
    resolve_label_space,
    restrict_to_space,
)

__all__ = ["IMAGE_EXTENSIONS", "load_csv", "load_folder"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
"""File extensions (lower-case) that :func:`load_folder` treats as images."""


def _label(text: str, *, file: Path | str, line: int | None) -> tuple[str, int]:
    """The canonical label and its id among all eight (re-indexed by ``restrict_to_space``)."""
    canon = canonical_label(text)
    if canon is None:
        raise DatasetFormatError(file, line, text, "not an emotion label (see canonical_label)")
    return canon, CANONICAL.id_of(canon)


def load_folder(
    root: str | os.PathLike[str],
    split: str | None = None,
    *,
    label_space: LabelSpaceArg = None,
    skip_missing: bool = False,
    verify_images: bool = True,
    return_report: bool = False,
) -> hf.Dataset | tuple[hf.Dataset, LoadReport]:
    """Read ``root[/split]/<class>/**/<image>`` into a ``datasets.Dataset``.

    Class folder names go through :func:`tag_model.au.canonical_label` (``happy/`` ->
    ``happiness``; case-insensitive); a folder that names no emotion raises
    :class:`DatasetFormatError`; images of an emotion outside ``label_space`` are dropped and
    counted in ``report.dropped`` (``not_in_label_space:<label>``). Hidden files and folders (``.name``) are ignored. Files whose
    extension is not in :data:`IMAGE_EXTENSIONS`, and files directly under the root, are not
    loaded and are listed in ``report.ignored_files``. Files are read in sorted order.

    Args:
        split: a sub-folder of ``root`` holding the class folders (``train``, ``test``...).
        label_space: the space for ``label_id`` (a :class:`LabelSpace`, its name, or a list
            of labels); default: all eight canonical classes in canonical order.

    Raises:
        DatasetFormatError: a class folder that is not an emotion.
        UnsafePathError: a symlink that leads outside the root.
        DatasetImageError: corrupt images and ``skip_missing=False``.
    """
    space = resolve_label_space(label_space)
    base = Path(root)
    if split:
        base = base / split
    base_r = base.resolve()
    if not base_r.is_dir():
        raise FileNotFoundError(f"image folder not found: {base}")
    report = LoadReport(source="folder", split=split, files=[str(base_r)])
    records: list[Record] = []
    for entry in sorted(base_r.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            report.ignored_files.append(entry.name)
            continue
        label, label_id = _label(entry.name, file=entry, line=None)
        for f in sorted(entry.rglob("*")):
            rel_parts = f.relative_to(base_r).parts
            if any(p.startswith(".") for p in rel_parts):
                continue
            if f.is_dir():
                continue
            rel = f.relative_to(base_r).as_posix()
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                report.ignored_files.append(rel)
                continue
            img_abs, img_rel = resolve_inside(base_r, rel, file=base_r, line=None)
            report.rows += 1
            records.append(
                Record(
                    image=str(img_abs),
                    label=label,
                    label_id=label_id,
                    landmarks=None,
                    path=img_rel,
                    check=img_abs,
                )
            )
    records = restrict_to_space(records, space, report)
    ds = build_dataset(
        records,
        space=space,
        report=report,
        root=base_r,
        skip_missing=skip_missing,
        verify_images=verify_images,
    )
    return (ds, report) if return_report else ds


def _parse_landmarks(text: str, *, file: Path, line: int) -> np.ndarray | None:
    s = text.strip()
    try:
        if s.startswith("["):
            arr = np.asarray(json.loads(s), dtype=np.float64)
            if arr.shape != (68, 2) or not np.all(np.isfinite(arr)):
                raise ValueError(f"expected 68 finite [x, y] pairs, got shape {arr.shape}")
            return arr.astype(np.float32)
        return parse_affectnet_landmarks(s)
    except ValueError as exc:
        raise DatasetFormatError(file, line, text, f"landmarks: {exc}") from None


def load_csv(
    path: str | os.PathLike[str],
    image_col: str = "path",
    label_col: str = "label",
    *,
    root: str | os.PathLike[str] | None = None,
    split: str | None = None,
    split_col: str = "split",
    landmarks_col: str | None = None,
    label_space: LabelSpaceArg = None,
    skip_missing: bool = False,
    verify_images: bool = True,
    return_report: bool = False,
) -> hf.Dataset | tuple[hf.Dataset, LoadReport]:
    """Read a CSV of image paths and emotion labels into a ``datasets.Dataset``.

    Image paths are relative to ``root`` (default: the CSV's folder) and may not leave it.
    Labels go through :func:`tag_model.au.canonical_label` (``Happy`` -> ``happiness``).

    Args:
        image_col, label_col: column names (header names are stripped of spaces).
        split: keep only rows whose ``split_col`` equals it (the column must exist).
        landmarks_col: optional column with 68 points, as AffectNet's ``x1;y1;...;x68;y68``
            or as JSON ``[[x, y], ...]``; empty means None.
        label_space: the space for ``label_id`` (a :class:`~tag_model.au.LabelSpace`, its
            name, or a list of labels); default all eight canonical classes. Rows whose label
            is outside it are dropped and counted in ``report.dropped``
            (``not_in_label_space:<label>``).

    Raises:
        DatasetFormatError: missing columns, an unknown label, bad landmarks or a short row
            (file, 1-based line, value).
        UnsafePathError: an image path that escapes ``root``.
        DatasetImageError: missing or corrupt images and ``skip_missing=False``.
    """
    space = resolve_label_space(label_space)
    csv_path = Path(path).resolve()
    if not csv_path.is_file():
        raise FileNotFoundError(f"CSV not found: {path}")
    root_p = Path(root).resolve() if root is not None else csv_path.parent
    report = LoadReport(source="csv", split=split, files=[str(csv_path)])
    records: list[Record] = []
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DatasetFormatError(csv_path, 1, "", "empty file, expected a header row")
        names = [h.strip() for h in header]
        wanted = [image_col, label_col]
        if split is not None:
            wanted.append(split_col)
        if landmarks_col is not None:
            wanted.append(landmarks_col)
        missing = [c for c in wanted if c not in names]
        if missing:
            raise DatasetFormatError(csv_path, 1, header, f"missing column(s) {missing}")
        col = {n: i for i, n in enumerate(names)}
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            line = reader.line_num
            if len(row) != len(names):
                raise DatasetFormatError(
                    csv_path, line, f"{len(row)} fields", f"expected {len(names)} fields"
                )
            if split is not None and row[col[split_col]].strip() != split:
                continue
            label, label_id = _label(row[col[label_col]], file=csv_path, line=line)
            lm = (
                _parse_landmarks(row[col[landmarks_col]], file=csv_path, line=line)
                if landmarks_col is not None
                else None
            )
            img_abs, img_rel = resolve_inside(root_p, row[col[image_col]], file=csv_path, line=line)
            report.rows += 1
            records.append(
                Record(
                    image=str(img_abs),
                    label=label,
                    label_id=label_id,
                    landmarks=lm,
                    path=img_rel,
                    line=line,
                    check=img_abs,
                )
            )
    records = restrict_to_space(records, space, report)
    ds = build_dataset(
        records,
        space=space,
        report=report,
        root=root_p,
        skip_missing=skip_missing,
        verify_images=verify_images,
    )
    return (ds, report) if return_report else ds
