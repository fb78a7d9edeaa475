"""FERPlus reader: FER2013 pixels (``fer2013.csv``) with FERPlus votes (``fer2013new.csv``)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import datasets as hf
import numpy as np
from PIL import Image

from tag_model.au import FERPLUS

from ._common import (
    DatasetFormatError,
    LabelSpaceArg,
    LoadReport,
    Record,
    build_dataset,
    resolve_label_space,
    restrict_to_space,
)

__all__ = ["FERPLUS_VOTE_COLUMNS", "ferplus_label", "load_ferplus"]

FERPLUS_VOTE_COLUMNS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
"""The ten vote columns of ``fer2013new.csv`` in file order (8 emotions, unknown, not-a-face)."""

_USAGE = {
    "train": "Training",
    "training": "Training",
    "valid": "PublicTest",
    "val": "PublicTest",
    "validation": "PublicTest",
    "publictest": "PublicTest",
    "test": "PrivateTest",
    "privatetest": "PrivateTest",
    "all": None,
}
_SPLIT_NAME = {"Training": "train", "PublicTest": "valid", "PrivateTest": "test", None: "all"}
_SIDE = 48
_GEN_DIRS = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}


def ferplus_label(votes: np.ndarray | list[int], rule: str = "majority") -> tuple[str | None, str]:
    """Apply a FERPlus voting rule to one image's 10 vote counts.

    Args:
        votes: counts in :data:`FERPLUS_VOTE_COLUMNS` order (8 emotions, ``unknown``, ``NF``).
        rule: ``"majority"``: the top column must hold *more than half* of all votes;
            ``"plurality"``: the top column must hold strictly more votes than any other.
            (Barsoum et al., "Training Deep Networks for Facial Expression Recognition with
            Crowd-Sourced Label Distribution", ICMI 2016.)

    Returns:
        ``(label, reason)``: ``label`` is the canonical emotion, or None when the image is
        dropped, with ``reason`` one of ``"no_votes"``, ``"tie"`` (plurality, or a majority
        rule without a single top column), ``"no_majority"``, ``"unknown"``, ``"NF"``
        (the winning column is unknown / not a face). ``reason`` is ``"ok"`` when kept.

    >>> ferplus_label([6, 4, 0, 0, 0, 0, 0, 0, 0, 0])
    ('neutral', 'ok')
    >>> ferplus_label([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], "plurality")
    (None, 'tie')
    """
    v = np.asarray(votes, dtype=np.int64)
    if v.shape != (10,):
        raise ValueError(f"expected 10 vote counts, got shape {v.shape}")
    total = int(v.sum())
    if total <= 0:
        return None, "no_votes"
    top = int(v.max())
    winners = np.flatnonzero(v == top)
    if rule == "majority":
        if 2 * top <= total:
            return None, "no_majority"
    elif rule != "plurality":
        raise ValueError(f"rule must be 'majority' or 'plurality', got {rule!r}")
    if winners.size > 1:
        return None, "tie"
    col = FERPLUS_VOTE_COLUMNS[int(winners[0])]
    if col in ("unknown", "NF"):
        return None, col
    return col, "ok"


def _header(path: Path, reader: csv.reader, required: tuple[str, ...]) -> dict[str, int]:
    header = next(reader, None)
    if header is None:
        raise DatasetFormatError(path, 1, "", "empty file, expected a header row")
    names = [h.strip() for h in header]
    missing = [c for c in required if c not in names]
    if missing:
        raise DatasetFormatError(path, 1, header, f"missing column(s) {missing}")
    return {n: i for i, n in enumerate(names)}


def _pixels_to_png(path: Path, line: int, text: str) -> bytes:
    parts = text.split()
    if len(parts) != _SIDE * _SIDE:
        raise DatasetFormatError(
            path, line, f"{len(parts)} values", f"pixels must hold {_SIDE * _SIDE} values (48x48)"
        )
    try:
        arr = np.asarray(parts, dtype=np.int64)
    except ValueError:
        bad = next(p for p in parts if not p.lstrip("-").isdigit())
        raise DatasetFormatError(path, line, bad, "pixel value is not an integer") from None
    if arr.min() < 0 or arr.max() > 255:
        bad = int(arr[(arr < 0) | (arr > 255)][0])
        raise DatasetFormatError(path, line, bad, "pixel value outside 0-255")
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8).reshape(_SIDE, _SIDE), mode="L").save(buf, "PNG")
    return buf.getvalue()


def load_ferplus(
    root: str | os.PathLike[str],
    split: str = "train",
    rule: str = "majority",
    *,
    fer2013_csv: str | os.PathLike[str] | None = None,
    ferplus_csv: str | os.PathLike[str] | None = None,
    label_space: LabelSpaceArg = None,
    skip_missing: bool = False,
    return_report: bool = False,
) -> hf.Dataset | tuple[hf.Dataset, LoadReport]:
    """Read FERPlus (8 classes) into a ``datasets.Dataset``.

    ``label_space`` (a name, a :class:`~tag_model.au.LabelSpace` or a list of labels; default
    FERPlus's eight classes) sets ``label_id``; rows whose label is outside it are dropped and
    counted in ``report.dropped`` (``not_in_label_space:<label>``), after the voting rule.

    Files (row ``i`` of one describes the same image as row ``i`` of the other)::

        root/fer2013.csv     # emotion,pixels,Usage  -- 48x48 gray, space-separated 0-255
        root/fer2013new.csv  # Usage,Image name,neutral,happiness,surprise,sadness,anger,
                             #   disgust,fear,contempt,unknown,NF  -- vote counts

    Splits: ``"train"`` = ``Training``, ``"valid"`` = ``PublicTest``, ``"test"`` =
    ``PrivateTest`` (FERPlus's FER2013Train/Valid/Test), or ``"all"``. The labels come from the
    votes, never from FER2013's ``emotion`` column, under ``rule`` (see :func:`ferplus_label`):
    ``"majority"`` (> half of the votes) or ``"plurality"`` (most votes, ties dropped). Images
    whose winning column is ``unknown`` or ``NF`` are dropped, as are rows with an empty
    ``Image name`` (FERPlus removed those images); every drop is counted in
    ``report.dropped`` and logged.

    Images are 48x48 grayscale PNG bytes; ``path`` is the FERPlus image name
    (``fer0000000.png``); ``landmarks`` is None.

    **Generator layout.** When ``root/fer2013.csv`` is absent, the folders written by
    Microsoft's ``generate_training_data.py`` are read instead::

        root/FER2013Train/label.csv   # fer0000000.png,"(0, 0, 48, 48)",4,0,0,1,3,2,0,0,0,0
        root/FER2013Train/fer0000000.png ...
        root/FER2013Valid/...  root/FER2013Test/...

    (``label.csv``: image name, face rectangle, then the ten vote counts in
    :data:`FERPLUS_VOTE_COLUMNS` order; no header). ``path`` is ``FER2013Train/<name>``;
    ``skip_missing`` skips rows whose PNG is missing or corrupt (counted), else they fail.

    Raises:
        DatasetFormatError: a malformed row (wrong pixel count, bad pixel, bad vote count,
            Usage values or row counts that disagree between the two files), naming the file,
            the 1-based line and the value.
    """
    key = split.strip().lower()
    if key not in _USAGE:
        raise ValueError(f"FERPlus split must be one of {sorted(_USAGE)}, got {split!r}")
    if rule not in ("majority", "plurality"):
        raise ValueError(f"rule must be 'majority' or 'plurality', got {rule!r}")
    usage = _USAGE[key]
    root_p = Path(root).resolve()
    fer_path = Path(fer2013_csv) if fer2013_csv is not None else root_p / "fer2013.csv"
    new_path = Path(ferplus_csv) if ferplus_csv is not None else root_p / "fer2013new.csv"
    if (
        fer2013_csv is None
        and not fer_path.is_file()
        and any((root_p / d / "label.csv").is_file() for d in _GEN_DIRS.values())
    ):
        return _load_generated(root_p, usage, rule, label_space, skip_missing, return_report)
    for p in (fer_path, new_path):
        if not p.is_file():
            raise FileNotFoundError(f"FERPlus file not found: {p}")
    report = LoadReport(
        source="ferplus", split=_SPLIT_NAME[usage], files=[str(fer_path), str(new_path)]
    )
    records: list[Record] = []
    with (
        fer_path.open(newline="", encoding="utf-8-sig") as f_old,
        new_path.open(newline="", encoding="utf-8-sig") as f_new,
    ):
        r_old, r_new = csv.reader(f_old), csv.reader(f_new)
        h_old = _header(fer_path, r_old, ("emotion", "pixels", "Usage"))
        h_new = _header(new_path, r_new, ("Usage", "Image name", *FERPLUS_VOTE_COLUMNS))
        index = 0
        while True:
            row_old = next(r_old, None)
            row_new = next(r_new, None)
            if row_old is None and row_new is None:
                break
            if row_old is None or row_new is None:
                longer, reader = (new_path, r_new) if row_old is None else (fer_path, r_old)
                raise DatasetFormatError(
                    longer,
                    reader.line_num,
                    f"{index} rows in the other file",
                    f"{fer_path.name} and {new_path.name} must have the same number of rows",
                )
            l_old, l_new = r_old.line_num, r_new.line_num
            if len(row_old) != len(h_old):
                raise DatasetFormatError(
                    fer_path, l_old, f"{len(row_old)} fields", f"expected {len(h_old)} fields"
                )
            if len(row_new) != len(h_new):
                raise DatasetFormatError(
                    new_path, l_new, f"{len(row_new)} fields", f"expected {len(h_new)} fields"
                )
            u_old = row_old[h_old["Usage"]].strip()
            u_new = row_new[h_new["Usage"]].strip()
            if u_old not in ("Training", "PublicTest", "PrivateTest"):
                raise DatasetFormatError(
                    fer_path, l_old, u_old, "Usage must be Training, PublicTest or PrivateTest"
                )
            if u_new != u_old:
                raise DatasetFormatError(
                    new_path,
                    l_new,
                    u_new,
                    f"Usage differs from {fer_path.name} line {l_old} ({u_old!r})",
                )
            emotion = row_old[h_old["emotion"]].strip()
            if emotion not in {"0", "1", "2", "3", "4", "5", "6"}:
                raise DatasetFormatError(fer_path, l_old, emotion, "FER2013 emotion must be 0-6")
            votes = np.zeros(len(FERPLUS_VOTE_COLUMNS), dtype=np.int64)
            for j, col in enumerate(FERPLUS_VOTE_COLUMNS):
                text = row_new[h_new[col]].strip()
                if not text.isdigit():
                    raise DatasetFormatError(
                        new_path, l_new, text, f"vote count {col!r} must be a non-negative integer"
                    )
                votes[j] = int(text)
            this_index = index
            index += 1
            if usage is not None and u_old != usage:
                continue
            report.rows += 1
            name = row_new[h_new["Image name"]].strip()
            if not name:
                report.drop("no_image_name")
                continue
            label, reason = ferplus_label(votes, rule)
            if label is None:
                report.drop(reason)
                continue
            png = _pixels_to_png(fer_path, l_old, row_old[h_old["pixels"]])
            records.append(
                Record(
                    image={"bytes": png, "path": name},
                    label=label,
                    label_id=FERPLUS.id_of(label),
                    landmarks=None,
                    path=name,
                    line=l_old,
                    extra={"row": this_index},
                )
            )
    return _finish(records, label_space, report, root_p, False, False, return_report)


def _finish(
    records: list[Record],
    label_space: LabelSpaceArg,
    report: LoadReport,
    root: Path,
    skip_missing: bool,
    verify_images: bool,
    return_report: bool,
) -> hf.Dataset | tuple[hf.Dataset, LoadReport]:
    """Both layouts' last step: restrict to the label space, then build the dataset."""
    space = resolve_label_space(label_space, FERPLUS)
    records = restrict_to_space(records, space, report)
    ds = build_dataset(
        records,
        space=space,
        report=report,
        root=root,
        skip_missing=skip_missing,
        verify_images=verify_images,
    )
    return (ds, report) if return_report else ds


def _load_generated(
    root: Path,
    usage: str | None,
    rule: str,
    label_space: LabelSpaceArg,
    skip_missing: bool,
    return_report: bool,
) -> hf.Dataset | tuple[hf.Dataset, LoadReport]:
    """FERPlus as ``generate_training_data.py`` writes it: ``FER2013<Split>/label.csv`` + PNGs."""
    usages = [usage] if usage is not None else list(_GEN_DIRS)
    dirs = [root / _GEN_DIRS[u] for u in usages]
    for d in dirs:
        if not (d / "label.csv").is_file():
            raise FileNotFoundError(
                f"FERPlus label file not found: {d / 'label.csv'} (generator layout; or put "
                f"fer2013.csv and fer2013new.csv in {root})"
            )
    report = LoadReport(
        source="ferplus", split=_SPLIT_NAME[usage], files=[str(d / "label.csv") for d in dirs]
    )
    records: list[Record] = []
    for d in dirs:
        path = d / "label.csv"
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                name = row[0].strip()
                if line == 1 and not name.lower().endswith(".png"):
                    continue  # a header row
                if len(row) not in (11, 12):
                    raise DatasetFormatError(
                        path,
                        line,
                        f"{len(row)} fields",
                        "expected image name, face box, then 10 vote counts",
                    )
                votes = np.zeros(len(FERPLUS_VOTE_COLUMNS), dtype=np.int64)
                for j, (col, text) in enumerate(zip(FERPLUS_VOTE_COLUMNS, row[-10:], strict=True)):
                    text = text.strip()
                    if not text.isdigit():
                        raise DatasetFormatError(
                            path, line, text, f"vote count {col!r} must be a non-negative integer"
                        )
                    votes[j] = int(text)
                report.rows += 1
                if not name:
                    report.drop("no_image_name")
                    continue
                label, reason = ferplus_label(votes, rule)
                if label is None:
                    report.drop(reason)
                    continue
                img = d / name
                records.append(
                    Record(
                        image=str(img),
                        label=label,
                        label_id=FERPLUS.id_of(label),
                        landmarks=None,
                        path=f"{d.name}/{name}",
                        line=line,
                        check=img,
                        extra={"row": len(records)},
                    )
                )
    return _finish(records, label_space, report, root, skip_missing, True, return_report)
