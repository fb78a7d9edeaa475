"""AffectNet (manually annotated part) reader."""

from __future__ import annotations

import csv
import itertools
import math
import os
from pathlib import Path
from typing import Any

import datasets as hf
import numpy as np

from tag_model.au import AFFECTNET7, AFFECTNET8, AFFECTNET_CODES
from tag_model.faces import parse_affectnet_landmarks

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

__all__ = ["AFFECTNET_COLUMNS", "load_affectnet"]

AFFECTNET_COLUMNS: tuple[str, ...] = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
"""Columns of AffectNet's ``training.csv`` / ``validation.csv``."""

_FILES = {
    "train": "training.csv",
    "training": "training.csv",
    "validation": "validation.csv",
    "valid": "validation.csv",
    "val": "validation.csv",
    "test": "validation.csv",
}
_LIST_DIRS = ("", "Manually_Annotated_file_lists")
_SET_DIRS = {"training.csv": "train_set", "validation.csv": "val_set"}
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def _number(path: Path, line: int, column: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DatasetFormatError(path, line, text, f"column {column!r} must be a number") from None
    if not math.isfinite(v):
        raise DatasetFormatError(path, line, text, f"column {column!r} must be finite")
    return v


def load_affectnet(
    root: str | os.PathLike[str],
    split: str = "train",
    classes: int | None = None,
    *,
    images_dir: str = "Manually_Annotated_Images",
    extra_columns: bool = False,
    label_space: LabelSpaceArg = None,
    skip_missing: bool = False,
    verify_images: bool = True,
    return_report: bool = False,
) -> hf.Dataset | tuple[hf.Dataset, LoadReport]:
    """Read AffectNet (manually annotated images) into a ``datasets.Dataset``.

    Files: ``root/training.csv`` (``split="train"``) or ``root/validation.csv``
    (``"validation"``; ``"val"`` and ``"test"`` are aliases, as AffectNet's validation set is
    the usual test set). ``root/Manually_Annotated_file_lists/`` is also searched. Columns:
    ``subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks,
    expression, valence, arousal``. Images are ``root/<images_dir>/<subDirectory_filePath>``.

    Expression codes 0-10: 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust,
    6 anger, 7 contempt, 8 none, 9 uncertain, 10 no-face. ``classes=7`` keeps 0-6 (drops 7-10);
    ``classes=8`` keeps 0-7 (drops 8-10). Dropped rows are counted per class name in
    ``report.dropped``. ``classes=None`` (the default) is 7, or 8 when ``label_space``
    includes ``contempt``.

    ``label_space`` (a name, a :class:`~tag_model.au.LabelSpace` or a list of labels; default
    AffectNet-7/8 as ``classes`` says) sets ``label_id``; rows whose label is outside it are
    dropped and counted in ``report.dropped`` (``not_in_label_space:<label>``).

    ``path`` is relative to ``root`` (``<images_dir>/<subDirectory_filePath>``). The images
    folder may itself be a symlink (e.g. to a big disk); paths inside it that climb out of it,
    are absolute, or are symlinks leading out of it are refused (:class:`UnsafePathError`).

    ``landmarks`` are the file's 68 points (pixels of the full image in ``images_dir``; None
    where the field is empty).

    **Newer release** (per-image NumPy files, 224x224 face crops): when no list CSV is found,
    ``root/train_set`` (``split="train"``) or ``root/val_set`` (validation) is read instead::

        train_set/images/<id>.jpg
        train_set/annotations/<id>_exp.npy   # expression code 0-7, as a string or number
        train_set/annotations/<id>_lnd.npy   # 136 values x1,y1,...,x68,y68 (crop pixels)
        train_set/annotations/<id>_val.npy   # valence
        train_set/annotations/<id>_aro.npy   # arousal

    Rows are in sorted ``<id>`` order; ``landmarks`` come from ``_lnd.npy`` (so dlib is not
    needed); ``face_box`` (with ``extra_columns``) is the whole image. A missing or
    unreadable annotation raises :class:`DatasetFormatError` naming the file. ``extra_columns=True`` adds ``face_box`` (xyxy float32 from
    ``face_x/face_y/face_width/face_height``), ``valence`` and ``arousal``.

    A file without the header row is read in the column order above. Every row is validated, kept or not: a malformed row raises :class:`DatasetFormatError`
    naming the file, the 1-based line and the value.
    """
    key = split.strip().lower()
    if key not in _FILES:
        raise ValueError(f"AffectNet split must be one of {sorted(_FILES)}, got {split!r}")
    wanted = None if label_space is None else resolve_label_space(label_space)
    if classes is None:
        classes = 8 if wanted is not None and "contempt" in wanted.names else 7
    if classes not in (7, 8):
        raise ValueError(f"AffectNet classes must be 7 or 8, got {classes!r}")
    space = AFFECTNET7 if classes == 7 else AFFECTNET8
    root_p = Path(root).resolve()
    candidates = [root_p / d / _FILES[key] for d in _LIST_DIRS]
    csv_path = next((p for p in candidates if p.is_file()), None)
    set_dir = root_p / _SET_DIRS[_FILES[key]]
    if csv_path is None and (set_dir / "annotations").is_dir():
        return _load_npy_release(
            root_p,
            set_dir,
            space,
            wanted,
            extra_columns=extra_columns,
            skip_missing=skip_missing,
            verify_images=verify_images,
            return_report=return_report,
        )
    if csv_path is None:
        raise FileNotFoundError(
            f"AffectNet list not found: tried {', '.join(str(p) for p in candidates)}, "
            f"and no {set_dir / 'annotations'} (the newer per-image .npy release)"
        )
    img_root = (root_p / images_dir).resolve()  # may itself be a symlink (big image store)
    report = LoadReport(
        source="affectnet",
        split="train" if _FILES[key] == "training.csv" else "validation",
        files=[str(csv_path)],
    )
    extra = _EXTRA_FEATURES if extra_columns else None
    records: list[Record] = []
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DatasetFormatError(csv_path, 1, "", "empty file, expected a header row")
        names = [h.strip() for h in header]
        first: list[list[str]] = []
        if len(names) == len(AFFECTNET_COLUMNS) and names[6].isdigit():
            # a list without a header row (some copies): standard column order
            first, names = [header], list(AFFECTNET_COLUMNS)
        missing = [c for c in AFFECTNET_COLUMNS if c not in names]
        if missing:
            raise DatasetFormatError(csv_path, 1, header, f"missing column(s) {missing}")
        col = {n: i for i, n in enumerate(names)}
        for row in itertools.chain(first, reader):
            if not row or all(not c.strip() for c in row):
                continue
            line = reader.line_num
            if len(row) != len(names):
                raise DatasetFormatError(
                    csv_path, line, f"{len(row)} fields", f"expected {len(names)} fields"
                )
            code_text = row[col["expression"]].strip()
            try:
                code = int(code_text)
            except ValueError:
                code = -1
            if code not in AFFECTNET_CODES:
                raise DatasetFormatError(
                    csv_path, line, code_text, "expression must be an integer code 0-10"
                )
            fx, fy, fw, fh_ = (
                _number(csv_path, line, c, row[col[c]].strip())
                for c in ("face_x", "face_y", "face_width", "face_height")
            )
            valence = _number(csv_path, line, "valence", row[col["valence"]].strip())
            arousal = _number(csv_path, line, "arousal", row[col["arousal"]].strip())
            try:
                lm = parse_affectnet_landmarks(row[col["facial_landmarks"]])
            except ValueError as exc:
                raise DatasetFormatError(
                    csv_path, line, row[col["facial_landmarks"]], f"facial_landmarks: {exc}"
                ) from None
            rel = row[col["subDirectory_filePath"]]
            img_abs, img_rel = resolve_inside(img_root, rel, file=csv_path, line=line)
            img_rel = f"{images_dir.strip('/')}/{img_rel}"
            report.rows += 1
            if code not in space.file_codes:
                report.drop(AFFECTNET_CODES[code])
                continue
            label = space.name_of_code(code)
            records.append(
                Record(
                    image=str(img_abs),
                    label=label,
                    label_id=space.id_of(label),
                    landmarks=lm,
                    path=img_rel,
                    line=line,
                    check=img_abs,
                    extra={
                        "face_box": np.array([fx, fy, fx + fw, fy + fh_], np.float32).tolist(),
                        "valence": valence,
                        "arousal": arousal,
                    },
                )
            )
    return _finish(
        records, space, wanted, report, img_root, extra, skip_missing, verify_images, return_report
    )


#: The columns ``extra_columns=True`` adds, in both layouts.
_EXTRA_FEATURES = hf.Features(
    {
        "face_box": hf.List(hf.Value("float32"), length=4),
        "valence": hf.Value("float32"),
        "arousal": hf.Value("float32"),
    }
)


def _finish(
    records: list[Record],
    space: Any,
    wanted: Any,
    report: LoadReport,
    root: Path,
    extra: hf.Features | None,
    skip_missing: bool,
    verify_images: bool,
    return_report: bool,
) -> hf.Dataset | tuple[hf.Dataset, LoadReport]:
    """Both layouts' last step: restrict to ``wanted`` (when given), then build the dataset."""
    if wanted is not None:
        records = restrict_to_space(records, wanted, report)
        space = wanted
    ds = build_dataset(
        records,
        space=space,
        report=report,
        root=root,
        skip_missing=skip_missing,
        verify_images=verify_images,
        extra_features=extra,
    )
    return (ds, report) if return_report else ds


def _npy_value(path: Path, what: str) -> np.ndarray:
    """A ``.npy`` annotation as a float array (strings such as ``'3'`` or ``'0.25'`` too)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetFormatError(path, 1, "", f"missing {what} annotation file") from None
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(path, 1, "", f"unreadable {what} .npy file: {exc}") from None
    try:
        out = np.asarray(arr, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DatasetFormatError(path, 1, arr, f"{what} must be numeric") from None
    if out.size == 0 or not np.isfinite(out).all():
        raise DatasetFormatError(path, 1, arr, f"{what} must be finite numbers")
    return out


def _load_npy_release(
    root: Path,
    set_dir: Path,
    space: Any,
    wanted: Any,
    *,
    extra_columns: bool,
    skip_missing: bool,
    verify_images: bool,
    return_report: bool,
) -> hf.Dataset | tuple[hf.Dataset, LoadReport]:
    """The newer AffectNet release: ``<set>/images/<id>.jpg`` + ``<set>/annotations/*.npy``."""
    img_dir, ann_dir = set_dir / "images", set_dir / "annotations"
    if not img_dir.is_dir():
        raise FileNotFoundError(f"AffectNet images folder not found: {img_dir}")
    report = LoadReport(
        source="affectnet",
        split="train" if set_dir.name == "train_set" else "validation",
        files=[str(ann_dir)],
    )
    extra = _EXTRA_FEATURES if extra_columns else None
    images = sorted(
        (p for p in img_dir.iterdir() if p.suffix.lower() in _IMAGE_EXTS), key=lambda p: p.stem
    )
    records: list[Record] = []
    for img in images:
        sid = img.stem
        exp_path = ann_dir / f"{sid}_exp.npy"
        code_f = float(_npy_value(exp_path, "expression")[0])
        code = int(code_f)
        if code != code_f or code not in AFFECTNET_CODES:
            raise DatasetFormatError(exp_path, 1, code_f, "expression must be an integer code 0-10")
        lnd_path = ann_dir / f"{sid}_lnd.npy"
        lm = None
        if lnd_path.exists():
            flat = _npy_value(lnd_path, "landmarks")
            if flat.size != 136:
                raise DatasetFormatError(
                    lnd_path, 1, f"{flat.size} values", "landmarks must hold 136 values (68 x,y)"
                )
            lm = flat.astype(np.float32).reshape(68, 2)
        valence = float(_npy_value(ann_dir / f"{sid}_val.npy", "valence")[0])
        arousal = float(_npy_value(ann_dir / f"{sid}_aro.npy", "arousal")[0])
        rel = f"{set_dir.name}/images/{img.name}"
        report.rows += 1
        if code not in space.file_codes:
            report.drop(AFFECTNET_CODES[code])
            continue
        label = space.name_of_code(code)
        w = h = 0.0
        if extra_columns:
            from PIL import Image

            with Image.open(img) as im:
                w, h = (float(v) for v in im.size)
        records.append(
            Record(
                image=str(img),
                label=label,
                label_id=space.id_of(label),
                landmarks=lm,
                path=rel,
                line=None,
                check=img,
                extra={"face_box": [0.0, 0.0, w, h], "valence": valence, "arousal": arousal},
            )
        )
    return _finish(
        records, space, wanted, report, root, extra, skip_missing, verify_images, return_report
    )
