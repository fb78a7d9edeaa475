"""Landmark sidecar files that sit next to a dataset (e.g. written by SynthFACS)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tag_model.faces import parse_affectnet_landmarks

from ._common import DatasetFormatError

__all__ = ["RAFDB_LANDMARKS_FILE", "SYNTHFACS_SIDECAR", "RafdbLandmarks", "read_rafdb_landmarks"]

RAFDB_LANDMARKS_FILE = "EmoLabel/landmarks_68.csv"
"""CSV sidecar of 68-point landmarks for a RAF-DB-layout root (not part of the real RAF-DB)."""

SYNTHFACS_SIDECAR = "Annotation/synthfacs.npz"
"""Ground-truth sidecar written by ``tag_model.synth.write_rafdb_layout``."""


@dataclass(frozen=True)
class RafdbLandmarks:
    """Landmarks keyed by image path relative to the root (``Image/aligned/x_aligned.jpg``)."""

    paths: tuple[Path, ...]
    points: dict[str, np.ndarray]

    def get(self, image_path: str) -> np.ndarray | None:
        """Landmarks of the image file ``image_path`` (relative POSIX path), or None.

        Landmarks belong to one file: when RAF-DB falls back from the aligned to the original
        image, the aligned image's landmarks are not used for it.
        """
        return self.points.get(image_path)


def _read_synthfacs_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "names" not in z.files or "landmarks" not in z.files:
                raise DatasetFormatError(
                    path, None, sorted(z.files), "SynthFACS sidecar needs 'names' and 'landmarks'"
                )
            names = z["names"]
            lms = np.asarray(z["landmarks"])
    except DatasetFormatError:
        raise
    except Exception as exc:  # zipfile / numpy errors on a damaged file
        raise DatasetFormatError(
            path, None, type(exc).__name__, f"unreadable .npz: {exc}"
        ) from None
    if names.ndim != 1 or lms.shape != (names.shape[0], 68, 2):
        raise DatasetFormatError(
            path,
            None,
            f"names {names.shape}, landmarks {lms.shape}",
            "expected names[N] and landmarks[N, 68, 2]",
        )
    if not np.all(np.isfinite(lms)):
        bad = int(np.flatnonzero(~np.isfinite(lms).all(axis=(1, 2)))[0])
        raise DatasetFormatError(path, None, str(names[bad]), "non-finite landmarks for image")
    out: dict[str, np.ndarray] = {}
    for name, lm in zip(names.tolist(), lms.astype(np.float32)):
        stem = str(name).rsplit(".", 1)[0]
        out[f"Image/aligned/{stem}_aligned.jpg"] = lm
    return out


def read_rafdb_landmarks(root: Path) -> RafdbLandmarks | None:
    """Read 68-point landmark sidecars of a RAF-DB-layout root, or None if there are none.

    Two sidecars are understood (the real RAF-DB has neither):

    - ``Annotation/synthfacs.npz`` written by :func:`tag_model.synth.write_rafdb_layout`:
      ``names`` (``str[N]``, label-file names such as ``train_00001.jpg``) and ``landmarks``
      (``float32[N, 68, 2]``, pixels of ``Image/aligned/<stem>_aligned.jpg``);
    - ``EmoLabel/landmarks_68.csv`` (:data:`RAFDB_LANDMARKS_FILE`, e.g. landmarks computed
      once with dlib or OpenFace): a header ``image,landmarks``; ``image`` is the image path
      relative to the root (``Image/aligned/train_00001_aligned.jpg``), ``landmarks`` holds
      136 ``;``-separated numbers ``x1;y1;...;x68;y68`` in that image's pixels; an empty
      field means unknown. Its rows override the ``.npz`` for the same image.

    Landmarks are tied to one image file: a row that falls back to ``Image/original/`` does
    not get the aligned image's landmarks.

    Raises:
        DatasetFormatError: malformed sidecar (file, line where there is one, value).
    """
    points: dict[str, np.ndarray] = {}
    used: list[Path] = []
    npz = root / SYNTHFACS_SIDECAR
    if npz.is_file():
        points.update(_read_synthfacs_npz(npz))
        used.append(npz)
    path = root / RAFDB_LANDMARKS_FILE
    if path.is_file():
        used.append(path)
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            names = [h.strip() for h in header] if header else []
            if "image" not in names or "landmarks" not in names:
                raise DatasetFormatError(
                    path, 1, header, "expected columns 'image' and 'landmarks'"
                )
            ii, li = names.index("image"), names.index("landmarks")
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(names):
                    raise DatasetFormatError(
                        path, reader.line_num, f"{len(row)} fields", f"expected {len(names)} fields"
                    )
                try:
                    lm = parse_affectnet_landmarks(row[li])
                except ValueError as exc:
                    raise DatasetFormatError(path, reader.line_num, row[li], str(exc)) from None
                key = row[ii].strip()
                if lm is None:
                    points.pop(key, None)
                else:
                    points[key] = lm
    if not used:
        return None
    return RafdbLandmarks(tuple(used), points)
