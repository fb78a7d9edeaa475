"""Action Units from OpenFace 2.0 CSV output (``FeatureExtraction`` / ``FaceLandmarkImg``).

OpenFace writes ``AUxx_r`` (intensity, 0-5, for AUs 1 2 4 5 6 7 9 10 12 14 15 17 20 23 25 26
45) and ``AUxx_c`` (presence, 0/1, the same AUs plus 28). Headers are separated by ``", "``,
so names may start with a space; they are stripped here.

**Probability mapping** (documented, configurable):

* intensity only: ``p_r = 1 / (1 + exp(-(r - r_mid) / r_scale))`` with ``r_mid = 1.0`` (FACS
  "A", a trace) and ``r_scale = 0.3``, so ``r = 0 -> 0.03``, ``r = 1 -> 0.5``,
  ``r >= 2 -> 0.97+``;
* presence only: ``p_c = c`` (0 or 1);
* both: ``p = w_c * c + (1 - w_c) * p_r`` with ``w_c = 0.5``, so the two must agree for a
  confident answer and either alone gives about 0.5.

Rows with ``success == 0`` (OpenFace failed to track the face) are kept out of the results
and listed in :attr:`OpenFaceAUs.failed` with their line number; a ``warnings.warn`` says
how many. Files without a ``success`` column are taken as all successful.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "OpenFaceAUs",
    "OpenFaceCSVDetector",
    "OpenFaceFormatError",
    "OpenFaceRow",
    "read_openface_aus",
]

_AU_COL = re.compile(r"^AU(\d+)_([rc])$")


class OpenFaceFormatError(ValueError):
    """A malformed OpenFace CSV (the message names file, line, column and value)."""


@dataclass(frozen=True)
class OpenFaceRow:
    """One face in one frame of an OpenFace CSV."""

    line: int
    frame: int
    face_id: int
    timestamp: float | None
    confidence: float | None
    success: bool
    intensity: dict[int, float]
    presence: dict[int, float]
    probs: dict[int, float]


@dataclass
class OpenFaceAUs:
    """A parsed OpenFace CSV: successful rows in ``rows``, failed ones in ``failed``."""

    path: Path
    rows: list[OpenFaceRow]
    failed: list[OpenFaceRow] = field(default_factory=list)
    intensity_aus: tuple[int, ...] = ()
    presence_aus: tuple[int, ...] = ()

    @property
    def aus(self) -> tuple[int, ...]:
        """Every AU with an ``_r`` or ``_c`` column."""
        return tuple(sorted(set(self.intensity_aus) | set(self.presence_aus)))

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, frame: int | None = None, face_id: int | None = None) -> OpenFaceRow | None:
        """The successful row for ``frame`` / ``face_id``; ``None`` if there is none.

        With several candidates (e.g. no ``frame`` given, or several faces in the frame and no
        ``face_id``) the one with the highest ``confidence`` wins (first on ties).
        """
        cands = [
            r
            for r in self.rows
            if (frame is None or r.frame == frame) and (face_id is None or r.face_id == face_id)
        ]
        if not cands:
            return None
        return max(cands, key=lambda r: -math.inf if r.confidence is None else r.confidence)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))


def _num(path: Path, line: int, col: str, text: str) -> float:
    try:
        v = float(text.strip())
    except ValueError:
        raise OpenFaceFormatError(
            f"{path}:{line}: column {col!r} has non-numeric value {text.strip()!r}"
        ) from None
    if not math.isfinite(v):
        raise OpenFaceFormatError(f"{path}:{line}: column {col!r} has non-finite value {text!r}")
    return v


def read_openface_aus(
    path: str | Path,
    *,
    r_mid: float = 1.0,
    r_scale: float = 0.3,
    presence_weight: float = 0.5,
) -> OpenFaceAUs:
    """Parse the AU columns of an OpenFace 2.0 CSV (see the module doc for the mapping).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        OpenFaceFormatError: no AU columns, a row of the wrong length, or a non-numeric value
            (the message names file, line, column and value).
    """
    path = Path(path)
    if not 0.0 <= presence_weight <= 1.0:
        raise ValueError(f"presence_weight must be in [0, 1], got {presence_weight}")
    if r_scale <= 0:
        raise ValueError(f"r_scale must be > 0, got {r_scale}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise OpenFaceFormatError(
                f"{path}:1: empty file, expected an OpenFace header"
            ) from None
        r_cols: dict[int, int] = {}
        c_cols: dict[int, int] = {}
        for i, name in enumerate(header):
            m = _AU_COL.match(name)
            if m:
                (r_cols if m.group(2) == "r" else c_cols)[int(m.group(1))] = i
        if not r_cols and not c_cols:
            raise OpenFaceFormatError(
                f"{path}:1: no AUxx_r / AUxx_c columns in header (first columns: {header[:6]})"
            )
        col = {name: i for i, name in enumerate(header)}
        i_frame = col.get("frame")
        i_face = col.get("face_id", col.get("face"))
        i_time, i_conf, i_succ = col.get("timestamp"), col.get("confidence"), col.get("success")
        rows: list[OpenFaceRow] = []
        failed: list[OpenFaceRow] = []
        for n, rec in enumerate(reader, start=1):
            line = n + 1
            if not rec or all(not c.strip() for c in rec):
                continue
            if len(rec) != len(header):
                raise OpenFaceFormatError(
                    f"{path}:{line}: {len(rec)} values for {len(header)} header columns"
                )

            def get(
                i: int | None, name: str, rec: list[str] = rec, line: int = line
            ) -> float | None:
                return None if i is None else _num(path, line, name, rec[i])

            frame = get(i_frame, "frame")
            face = get(i_face, "face_id")
            succ = get(i_succ, "success")
            inten = {au: _num(path, line, f"AU{au:02d}_r", rec[i]) for au, i in r_cols.items()}
            pres = {au: _num(path, line, f"AU{au:02d}_c", rec[i]) for au, i in c_cols.items()}
            probs: dict[int, float] = {}
            for au in sorted(set(inten) | set(pres)):
                p_r = _sigmoid((inten[au] - r_mid) / r_scale) if au in inten else None
                c = min(max(pres[au], 0.0), 1.0) if au in pres else None
                if p_r is not None and c is not None:
                    p = presence_weight * c + (1.0 - presence_weight) * p_r
                else:
                    p = p_r if p_r is not None else c  # type: ignore[assignment]
                probs[au] = float(p)  # type: ignore[arg-type]
            row = OpenFaceRow(
                line=line,
                frame=int(frame) if frame is not None else n,
                face_id=int(face) if face is not None else 0,
                timestamp=get(i_time, "timestamp"),
                confidence=get(i_conf, "confidence"),
                success=succ is None or succ != 0.0,
                intensity=inten,
                presence=pres,
                probs=probs,
            )
            (rows if row.success else failed).append(row)
    if failed:
        warnings.warn(
            f"{path}: {len(failed)} row(s) with success == 0 were not used "
            f"(lines {[r.line for r in failed][:10]}{'...' if len(failed) > 10 else ''})",
            stacklevel=2,
        )
    return OpenFaceAUs(
        path=path,
        rows=rows,
        failed=failed,
        intensity_aus=tuple(sorted(r_cols)),
        presence_aus=tuple(sorted(c_cols)),
    )


class OpenFaceCSVDetector:
    """An :class:`~tag_model.detectors.AUDetector` backed by an OpenFace 2.0 CSV.

    OpenFace runs outside Python; this replays its output. ``predict(frame=..., face_id=...)``
    picks the row (see :meth:`OpenFaceAUs.select`); ``image`` and ``landmarks`` are ignored.
    A frame with no successful row gives ``{}``.
    """

    def __init__(self, source: str | Path | OpenFaceAUs, **mapping: Any) -> None:
        self.table = (
            source if isinstance(source, OpenFaceAUs) else read_openface_aus(source, **mapping)
        )
        self.supported_aus: tuple[int, ...] = self.table.aus

    def __repr__(self) -> str:
        return f"OpenFaceCSVDetector({str(self.table.path)!r}, rows={len(self.table)})"

    def predict(
        self,
        image: Any = None,
        landmarks: np.ndarray | None = None,
        *,
        frame: int | None = None,
        face_id: int | None = None,
    ) -> dict[int, float]:
        """AU -> probability for the selected row (``{}`` if no successful row matches)."""
        row = self.table.select(frame, face_id)
        return {} if row is None else dict(row.probs)

    def predict_all(self) -> list[tuple[int, int, dict[int, float]]]:
        """``(frame, face_id, probs)`` for every successful row, in file order."""
        return [(r.frame, r.face_id, dict(r.probs)) for r in self.table.rows]
