"""Landmarks read from files: OpenFace 2.0 CSVs and AffectNet's ``facial_landmarks`` column."""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "LandmarkFormatError",
    "OpenFaceFailure",
    "OpenFaceLandmarks",
    "parse_affectnet_landmarks",
    "read_affectnet_landmarks",
    "read_openface_landmarks",
]

logger = logging.getLogger(__name__)

_N_POINTS = 68
_EMPTY = {"", "null", "none", "na", "nan"}


class LandmarkFormatError(ValueError):
    """A landmark file holds a malformed value; names the file, the 1-based line and the value."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, value: object, detail: str):
        self.path = str(path)
        self.line = line
        self.value = value
        self.detail = detail
        where = f"{self.path}:{line}" if line is not None else self.path
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"{where}: {detail} (value {shown})")


def parse_affectnet_landmarks(text: str | None) -> np.ndarray | None:
    """Parse AffectNet's ``facial_landmarks`` field into ``np.ndarray[68, 2]`` float32.

    The field holds 136 ``;``-separated numbers ``x1;y1;x2;y2;...;x68;y68`` in pixels of the
    original (uncropped) image, in iBUG-68 order. A trailing ``;`` is tolerated. An empty
    field (or ``NULL``/``NA``/``nan``) means "no landmarks" and gives None.

    Raises:
        ValueError: wrong number of values, or a value that is not a finite number. The message
            quotes the offending value; file readers add the file and line.
    """
    if text is None:
        return None
    s = str(text).strip()
    if s.lower() in _EMPTY:
        return None
    parts = [p.strip() for p in s.split(";")]
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if len(parts) != 2 * _N_POINTS:
        raise ValueError(
            f"expected {2 * _N_POINTS} ';'-separated landmark values (68 x,y pairs), got {len(parts)}"
        )
    values = np.empty(2 * _N_POINTS, dtype=np.float64)
    for i, p in enumerate(parts):
        try:
            v = float(p)
        except ValueError:
            raise ValueError(f"landmark value {i + 1} is not a number: {p!r}") from None
        if not math.isfinite(v):
            raise ValueError(f"landmark value {i + 1} is not finite: {p!r}")
        values[i] = v
    return values.reshape(_N_POINTS, 2).astype(np.float32)


def read_affectnet_landmarks(
    csv_path: str | os.PathLike[str], *, key: str = "subDirectory_filePath"
) -> dict[str, np.ndarray | None]:
    """Read the landmarks of an AffectNet ``training.csv`` / ``validation.csv``.

    Returns ``{subDirectory_filePath: np.ndarray[68, 2] float32 or None}`` (None where the
    field is empty). Coordinates are pixels of the image under ``Manually_Annotated_Images/``.

    Raises:
        LandmarkFormatError: a missing column or a malformed ``facial_landmarks`` value, naming
            the file, the 1-based line and the value.
    """
    path = Path(csv_path)
    out: dict[str, np.ndarray | None] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise LandmarkFormatError(path, 1, "", "empty file, expected a header row")
        names = [h.strip() for h in header]
        for col in (key, "facial_landmarks"):
            if col not in names:
                raise LandmarkFormatError(path, 1, header, f"missing column {col!r}")
        ki, li = names.index(key), names.index("facial_landmarks")
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) <= max(ki, li):
                raise LandmarkFormatError(
                    path, reader.line_num, row, f"expected {len(names)} fields, got {len(row)}"
                )
            try:
                out[row[ki].strip()] = parse_affectnet_landmarks(row[li])
            except ValueError as exc:
                raise LandmarkFormatError(path, reader.line_num, row[li], str(exc)) from None
    return out


@dataclass(frozen=True)
class OpenFaceFailure:
    """An OpenFace row with ``success == 0`` (tracking failed): reported, never used."""

    line: int
    frame: int
    face_id: int


@dataclass(frozen=True)
class OpenFaceLandmarks:
    """The 2D landmarks of an OpenFace 2.0 CSV (FeatureExtraction or FaceLandmarkImg).

    Attributes:
        path: the CSV file.
        frame: ``np.ndarray[N]`` int64 frame numbers of the rows used (FaceLandmarkImg files
            have no frame column; their rows get frame 0).
        face_id: ``np.ndarray[N]`` int64 (``face_id`` column, or ``face`` for image outputs).
        confidence: ``np.ndarray[N]`` float32 (NaN where the column is absent).
        landmarks: ``np.ndarray[N, 68, 2]`` float32 pixel coordinates from ``x_0..x_67``,
            ``y_0..y_67``.
        failed: rows with ``success == 0``, which are left out of the arrays above.
    """

    path: Path
    frame: np.ndarray
    face_id: np.ndarray
    confidence: np.ndarray
    landmarks: np.ndarray
    failed: tuple[OpenFaceFailure, ...]

    def __len__(self) -> int:
        return int(self.landmarks.shape[0])

    def get(self, frame: int, face_id: int = 0) -> np.ndarray | None:
        """Landmarks ``[68, 2]`` of one frame and face, or None (absent or failed)."""
        hit = np.flatnonzero((self.frame == frame) & (self.face_id == face_id))
        return self.landmarks[hit[0]] if hit.size else None


def _num(path: Path, line: int, column: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise LandmarkFormatError(path, line, text, f"column {column!r} is not a number") from None
    if not math.isfinite(v):
        raise LandmarkFormatError(path, line, text, f"column {column!r} is not finite")
    return v


def _int(path: Path, line: int, column: str, text: str) -> int:
    v = _num(path, line, column, text)
    if v != int(v):
        raise LandmarkFormatError(path, line, text, f"column {column!r} is not an integer")
    return int(v)


def read_openface_landmarks(csv_path: str | os.PathLike[str]) -> OpenFaceLandmarks:
    """Read the 68 2D landmarks of an OpenFace 2.0 CSV.

    Header names may start with a space (OpenFace writes ``frame, face_id, ...``); they are
    stripped. The landmark columns are ``x_0..x_67`` and ``y_0..y_67`` (the eye landmarks
    ``eye_lmk_x_*`` and 3D ``X_*`` are ignored). ``frame``/``face_id``/``success`` are used
    when present (``face`` stands in for ``face_id`` in FaceLandmarkImg output). Rows with
    ``success == 0`` are not used: they are listed in ``failed`` and logged.

    Raises:
        LandmarkFormatError: missing landmark columns or a malformed value (file, line, value).
    """
    path = Path(csv_path)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise LandmarkFormatError(path, 1, "", "empty file, expected an OpenFace header row")
        names = [h.strip() for h in header]
        index = {n: i for i, n in enumerate(names)}
        missing = [
            f"{a}_{k}" for a in ("x", "y") for k in range(_N_POINTS) if f"{a}_{k}" not in index
        ]
        if missing:
            raise LandmarkFormatError(
                path,
                1,
                ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else ""),
                f"not an OpenFace landmark CSV: {len(missing)} of the x_0..x_67/y_0..y_67 "
                "columns are missing",
            )
        xs = [index[f"x_{k}"] for k in range(_N_POINTS)]
        ys = [index[f"y_{k}"] for k in range(_N_POINTS)]
        fcol = "frame" if "frame" in index else None
        icol = "face_id" if "face_id" in index else ("face" if "face" in index else None)
        ccol = "confidence" if "confidence" in index else None
        scol = "success" if "success" in index else None
        frames: list[int] = []
        ids: list[int] = []
        confs: list[float] = []
        pts: list[np.ndarray] = []
        failed: list[OpenFaceFailure] = []
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            line = reader.line_num
            if len(row) != len(names):
                raise LandmarkFormatError(
                    path, line, f"{len(row)} fields", f"expected {len(names)} fields"
                )
            frame = _int(path, line, fcol, row[index[fcol]].strip()) if fcol else 0
            face_id = _int(path, line, icol, row[index[icol]].strip()) if icol else 0
            if scol is not None:
                success = _int(path, line, scol, row[index[scol]].strip())
                if success not in (0, 1):
                    raise LandmarkFormatError(
                        path, line, row[index[scol]], "success must be 0 or 1"
                    )
                if success == 0:
                    failed.append(OpenFaceFailure(line, frame, face_id))
                    continue
            conf = _num(path, line, ccol, row[index[ccol]].strip()) if ccol else math.nan
            p = np.empty((_N_POINTS, 2), dtype=np.float32)
            for k in range(_N_POINTS):
                p[k, 0] = _num(path, line, f"x_{k}", row[xs[k]].strip())
                p[k, 1] = _num(path, line, f"y_{k}", row[ys[k]].strip())
            frames.append(frame)
            ids.append(face_id)
            confs.append(conf)
            pts.append(p)
    if failed:
        logger.warning(
            "%s: %d row(s) with success == 0 not used (frames %s)",
            path,
            len(failed),
            [f.frame for f in failed[:10]],
        )
    return OpenFaceLandmarks(
        path=path,
        frame=np.asarray(frames, dtype=np.int64),
        face_id=np.asarray(ids, dtype=np.int64),
        confidence=np.asarray(confs, dtype=np.float32),
        landmarks=np.stack(pts) if pts else np.zeros((0, _N_POINTS, 2), np.float32),
        failed=tuple(failed),
    )
