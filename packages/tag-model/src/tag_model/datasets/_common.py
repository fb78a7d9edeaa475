"""Shared pieces of the FER dataset readers: errors, the load report, safe paths, output."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets as hf
import numpy as np
from PIL import Image

from tag_model.au import CANONICAL_LABELS, LabelSpace, canonical_label, get_label_space

__all__ = [
    "CANONICAL",
    "DatasetFormatError",
    "DatasetImageError",
    "LabelSpaceArg",
    "LoadReport",
    "Record",
    "UnsafePathError",
    "build_dataset",
    "check_image",
    "fer_features",
    "resolve_inside",
    "resolve_label_space",
    "restrict_to_space",
]

logger = logging.getLogger("tag_model.datasets")

CANONICAL = LabelSpace("canonical", CANONICAL_LABELS)
"""All eight canonical classes in canonical order: the default space of folder/CSV sources."""

LabelSpaceArg = LabelSpace | str | Sequence[str] | None
"""What a reader's ``label_space=`` accepts: a :class:`LabelSpace`, its name (``"rafdb"``,
``"ferplus"``, ``"affectnet7"``, ``"affectnet8"``, ``"canonical"``), an explicit list of
label names (in label-id order; synonyms accepted; the space is named ``"custom"``), or None."""


class DatasetFormatError(ValueError):
    """A malformed row or value in a dataset file.

    Attributes ``path``, ``line`` (1-based, or None when the problem is not on a line, such as
    a folder name) and ``value`` name exactly what is wrong.
    """

    def __init__(
        self, path: str | os.PathLike[str], line: int | None, value: object, detail: str
    ) -> None:
        self.path = str(path)
        self.line = line
        self.value = value
        self.detail = detail
        where = f"{self.path}, line {line}" if line is not None else self.path
        shown = repr(value)
        if len(shown) > 160:
            shown = shown[:157] + "..."
        super().__init__(f"{where}: {detail}: {shown}")


class UnsafePathError(DatasetFormatError):
    """An image path that would leave the dataset root (``..``, absolute, or a symlink)."""


@dataclass
class LoadReport:
    """What a reader read, kept, dropped and could not load. Nothing is dropped silently.

    Attributes:
        source: ``"rafdb"``, ``"ferplus"``, ``"affectnet"``, ``"folder"`` or ``"csv"``.
        split: the split read (None for sources without splits).
        files: the label/annotation files (or folders) read.
        rows: records read for this split (before any rule or filter).
        loaded: rows in the returned dataset.
        dropped: count per reason for rows removed by a documented rule (FERPlus ``unknown``,
            ``NF``, ``tie``, ``no_majority``; AffectNet classes outside the subset, ...).
        missing_images / corrupt_images: image paths (relative to the root) that do not exist
            or do not decode; ``image_errors`` maps each corrupt one to the decoder's message.
            With ``skip_missing=True`` these rows are skipped, otherwise loading fails.
        fallback_images: RAF-DB rows whose aligned image was missing, read from
            ``Image/original/`` instead.
        missing_landmarks: kept rows whose landmarks are unknown (``None``).
        ignored_files: files under a folder source that are not images (not loaded).
        label_space: the label space of ``label_id`` (the reader's own, or the one asked for).
    """

    source: str
    split: str | None = None
    files: list[str] = field(default_factory=list)
    rows: int = 0
    loaded: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    missing_images: list[str] = field(default_factory=list)
    corrupt_images: list[str] = field(default_factory=list)
    image_errors: dict[str, str] = field(default_factory=dict)
    fallback_images: list[str] = field(default_factory=list)
    missing_landmarks: int = 0
    ignored_files: list[str] = field(default_factory=list)
    label_space: str | None = None

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    @property
    def skipped(self) -> int:
        """Rows skipped for missing or corrupt images."""
        return len(self.missing_images) + len(self.corrupt_images)

    def summary(self) -> str:
        parts = [f"{self.source}" + (f"[{self.split}]" if self.split else "")]
        parts.append(f"{self.loaded} loaded of {self.rows} rows")
        if self.dropped:
            parts.append(
                "dropped " + ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items()))
            )
        if self.missing_images:
            parts.append(f"{len(self.missing_images)} missing image(s)")
        if self.corrupt_images:
            parts.append(f"{len(self.corrupt_images)} corrupt image(s)")
        if self.fallback_images:
            parts.append(f"{len(self.fallback_images)} from Image/original (no aligned image)")
        if self.ignored_files:
            parts.append(f"{len(self.ignored_files)} non-image file(s) ignored")
        return "; ".join(parts)


class DatasetImageError(OSError):
    """Images listed by a dataset are missing or corrupt (and ``skip_missing`` is False)."""

    def __init__(self, report: LoadReport, root: str | os.PathLike[str]) -> None:
        self.report = report
        items = [f"{p} (missing)" for p in report.missing_images] + [
            f"{p} (corrupt: {report.image_errors.get(p, '?')})" for p in report.corrupt_images
        ]
        shown = "; ".join(items[:5]) + (f"; ... {len(items) - 5} more" if len(items) > 5 else "")
        super().__init__(
            f"{report.source}"
            + (f"[{report.split}]" if report.split else "")
            + f": {len(report.missing_images)} missing and {len(report.corrupt_images)} corrupt "
            f"image(s) under {root}: {shown}. Pass skip_missing=True to skip them (they stay "
            "listed in the LoadReport)."
        )


@dataclass
class Record:
    """One row before it becomes a dataset row."""

    image: Any  # absolute path str, or {"bytes": ..., "path": ...}
    label: str
    label_id: int
    landmarks: np.ndarray | None
    path: str  # relative to the dataset root (POSIX), or an in-file name (FERPlus)
    line: int | None = None
    check: Path | None = None  # file to verify (None: nothing to check)
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_label_space(label_space: LabelSpaceArg, default: LabelSpace = CANONICAL) -> LabelSpace:
    """The :class:`LabelSpace` for a reader's ``label_space=`` argument (``default`` for None).

    Raises:
        ValueError: an unknown space name, a label that is not an emotion, an empty or
            duplicated label list.
    """
    if label_space is None:
        return default
    if isinstance(label_space, LabelSpace):
        return label_space
    if isinstance(label_space, str):
        if label_space.strip().lower() == "canonical":
            return CANONICAL
        try:
            return get_label_space(label_space)
        except KeyError as exc:
            raise ValueError(f"label_space: {exc.args[0]}") from None
    if not isinstance(label_space, Sequence):
        raise TypeError(
            "label_space must be a LabelSpace, a label space name or a list of labels, "
            f"got {type(label_space).__name__}"
        )
    names: list[str] = []
    for item in label_space:
        canon = canonical_label(str(item))
        if canon is None:
            raise ValueError(f"label_space: {item!r} is not an emotion label (see canonical_label)")
        if canon in names:
            raise ValueError(f"label_space: {item!r} ({canon}) is listed twice")
        names.append(canon)
    if not names:
        raise ValueError("label_space: an explicit label list must name at least one label")
    return LabelSpace("custom", tuple(names))


def restrict_to_space(records: list[Record], space: LabelSpace, report: LoadReport) -> list[Record]:
    """Keep the records whose label is in ``space``, with ``label_id`` re-indexed to it.

    Every other record is dropped and counted in ``report.dropped`` under
    ``"not_in_label_space:<label>"`` (and logged): nothing is removed silently.
    """
    kept: list[Record] = []
    out: dict[str, int] = {}
    for rec in records:
        if rec.label in space.names:
            rec.label_id = space.names.index(rec.label)
            kept.append(rec)
        else:
            out[rec.label] = out.get(rec.label, 0) + 1
    for label, n in sorted(out.items()):
        report.drop(f"not_in_label_space:{label}", n)
    report.label_space = space.name
    if out:
        logger.warning(
            "%s%s: dropped %d row(s) whose label is outside label space %r %s: %s",
            report.source,
            f"[{report.split}]" if report.split else "",
            sum(out.values()),
            space.name,
            space.names,
            ", ".join(f"{k}={v}" for k, v in sorted(out.items())),
        )
    return kept


def resolve_inside(
    root: Path, rel: str, *, file: str | os.PathLike[str], line: int | None
) -> tuple[Path, str]:
    """Resolve ``rel`` under ``root`` and refuse anything that leaves it.

    Returns ``(root / normalised path, normalised relative POSIX path)``. ``root`` must already be
    resolved. Refused, with :class:`UnsafePathError` naming ``file`` and ``line``: an empty
    path, an absolute path (``/x``, ``C:\\x``, ``~``), a path whose ``..`` parts climb out of
    the root, and a path that resolves outside the root through a symlink.
    """
    text = rel.strip()
    if not text:
        raise DatasetFormatError(file, line, rel, "empty image path")
    if (
        os.path.isabs(text)
        or text.startswith(("~", "\\"))
        or (len(text) > 1 and text[1] == ":" and text[0].isalpha())
    ):
        raise UnsafePathError(file, line, rel, "absolute image path refused (must be relative)")
    candidate = root / text
    resolved = candidate.resolve(strict=False)
    if not resolved.is_relative_to(root):
        raise UnsafePathError(
            file, line, rel, f"image path escapes the dataset root {root} (resolves to {resolved})"
        )
    norm = Path(os.path.normpath(text)).as_posix()
    return root / norm, norm


def check_image(path: Path, *, decode: bool = True) -> str | None:
    """None if ``path`` is a readable image, else ``"missing"`` or ``"corrupt: <message>"``."""
    if not path.is_file():
        return "missing"
    if not decode:
        return None
    try:
        with Image.open(path) as im:
            im.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ...
        return f"corrupt: {type(exc).__name__}: {exc}"
    return None


def fer_features(space: LabelSpace, extra: hf.Features | None = None) -> hf.Features:
    """The columns every reader returns (plus ``extra`` ones when asked for)."""
    feats = {
        "image": hf.Image(),
        "label": hf.Value("string"),
        "label_id": hf.ClassLabel(names=list(space.names)),
        "landmarks": hf.List(hf.List(hf.Value("float32"), length=2), length=68),
        "source": hf.Value("string"),
        "path": hf.Value("string"),
    }
    if extra:
        feats.update(extra)
    return hf.Features(feats)


def build_dataset(
    records: list[Record],
    *,
    space: LabelSpace,
    report: LoadReport,
    root: Path,
    skip_missing: bool,
    verify_images: bool,
    extra_features: hf.Features | None = None,
) -> hf.Dataset:
    """Check images, apply ``skip_missing``, and turn records into a ``datasets.Dataset``."""
    kept: list[Record] = []
    for rec in records:
        if rec.check is not None:
            problem = check_image(rec.check, decode=verify_images)
            if problem is not None:
                if problem == "missing":
                    report.missing_images.append(rec.path)
                else:
                    report.corrupt_images.append(rec.path)
                    report.image_errors[rec.path] = problem.removeprefix("corrupt: ")
                continue
        kept.append(rec)
    if report.skipped and not skip_missing:
        raise DatasetImageError(report, root)
    if report.skipped:
        logger.warning(
            "%s: skipped %d missing and %d corrupt image(s), e.g. %s",
            report.source,
            len(report.missing_images),
            len(report.corrupt_images),
            (report.missing_images + report.corrupt_images)[:3],
        )
    report.label_space = space.name
    report.missing_landmarks = sum(r.landmarks is None for r in kept)
    report.loaded = len(kept)
    columns: dict[str, list[Any]] = {
        "image": [r.image for r in kept],
        "label": [r.label for r in kept],
        "label_id": [r.label_id for r in kept],
        "landmarks": [None if r.landmarks is None else r.landmarks.tolist() for r in kept],
        "source": [report.source] * len(kept),
        "path": [r.path for r in kept],
    }
    for name in extra_features or {}:
        columns[name] = [r.extra.get(name) for r in kept]
    features = fer_features(space, extra_features)
    info = hf.DatasetInfo(
        description=report.summary(), dataset_name=report.source, features=features
    )
    ds = hf.Dataset.from_dict(
        columns,
        features=features,
        info=info,
        split=hf.NamedSplit(report.split) if report.split else None,
    )
    logger.info("%s", report.summary())
    return ds
