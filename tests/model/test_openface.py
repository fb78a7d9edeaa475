"""OpenFace 2.0 CSV: a fixture in the real column layout (headers with leading spaces)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from tag_model.detectors import OpenFaceCSVDetector, OpenFaceFormatError, read_openface_aus

R_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
C_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 28, 45)


def openface_header() -> list[str]:
    """The column order of OpenFace 2.0 FeatureExtraction output."""
    cols = ["frame", "face_id", "timestamp", "confidence", "success"]
    cols += [f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"] + ["gaze_angle_x", "gaze_angle_y"]
    for k in ("x", "y", "X", "Y", "Z"):
        cols += [f"eye_lmk_{k}_{i}" for i in range(56)]
    cols += ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    for k in ("x", "y", "X", "Y", "Z"):
        cols += [f"{k}_{i}" for i in range(68)]
    cols += ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"] + [f"p_{i}" for i in range(34)]
    cols += [f"AU{a:02d}_r" for a in R_AUS] + [f"AU{a:02d}_c" for a in C_AUS]
    return cols


def write_openface_csv(path: Path, rows: list[dict[str, float]]) -> Path:
    header = openface_header()
    lines = [", ".join(header)]  # OpenFace separates with ", " -> leading spaces
    for r in rows:
        lines.append(", ".join(f"{r.get(c, 0.0):g}" for c in header))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def of_csv(tmp_path: Path) -> Path:
    rows = [
        {"frame": 1, "face_id": 0, "timestamp": 0.0, "confidence": 0.98, "success": 1,
         "AU12_r": 3.2, "AU12_c": 1, "AU06_r": 1.0, "AU06_c": 0, "AU04_r": 0.0, "AU04_c": 0,
         "AU28_c": 1},
        {"frame": 2, "face_id": 0, "timestamp": 0.033, "confidence": 0.0, "success": 0,
         "AU12_r": 5.0, "AU12_c": 1},
        {"frame": 3, "face_id": 0, "timestamp": 0.067, "confidence": 0.91, "success": 1,
         "AU04_r": 2.5, "AU04_c": 1},
        {"frame": 3, "face_id": 1, "timestamp": 0.067, "confidence": 0.95, "success": 1,
         "AU15_r": 1.8, "AU15_c": 1},
    ]  # fmt: skip
    for i, r in enumerate(rows):
        for k in range(68):
            r[f"x_{k}"], r[f"y_{k}"] = 100 + k + i, 200 - k
    return write_openface_csv(tmp_path / "video.csv", rows)


def test_fixture_has_real_layout(of_csv: Path) -> None:
    header = of_csv.read_text().splitlines()[0].split(",")
    assert header[0] == "frame" and header[1] == " face_id" and header[4] == " success"
    assert " x_0" in header and " y_67" in header and " AU45_c" in header
    assert len(header) == 714  # OpenFace 2.0 FeatureExtraction column count


def test_parse_and_success_rows_reported(of_csv: Path) -> None:
    with pytest.warns(UserWarning, match="1 row"):
        table = read_openface_aus(of_csv)
    assert table.intensity_aus == R_AUS and table.presence_aus == C_AUS
    assert table.aus == tuple(sorted(set(R_AUS) | set(C_AUS)))
    assert [(r.frame, r.face_id) for r in table.rows] == [(1, 0), (3, 0), (3, 1)]
    assert len(table.failed) == 1
    bad = table.failed[0]
    assert bad.frame == 2 and bad.line == 3 and not bad.success
    row = table.rows[0]
    assert row.intensity[12] == pytest.approx(3.2) and row.presence[12] == 1.0
    assert row.timestamp == 0.0 and row.confidence == pytest.approx(0.98)


def test_probability_mapping(of_csv: Path) -> None:
    with pytest.warns(UserWarning):
        table = read_openface_aus(of_csv)
    p = table.rows[0].probs

    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    assert p[12] == pytest.approx(0.5 * 1 + 0.5 * sig((3.2 - 1.0) / 0.3))
    assert p[6] == pytest.approx(0.5 * 0 + 0.5 * 0.5)  # r = 1 is the midpoint, c = 0
    assert p[4] == pytest.approx(0.5 * sig(-1.0 / 0.3))
    assert p[28] == 1.0  # presence-only AU
    assert p[12] > 0.95 and p[4] < 0.05
    assert all(0.0 <= v <= 1.0 for r in table.rows for v in r.probs.values())


def test_detector_selects_rows(of_csv: Path) -> None:
    with pytest.warns(UserWarning):
        det = OpenFaceCSVDetector(of_csv)
    assert 28 in det.supported_aus and 45 in det.supported_aus
    assert det.predict(frame=1)[12] > 0.95
    assert det.predict(frame=2) == {}  # failed frame: not used
    assert det.predict(frame=3, face_id=0)[4] > 0.9
    assert det.predict(frame=3)[15] > 0.9  # highest confidence face in the frame
    assert det.predict()[12] > 0.95  # whole file: the most confident row (0.98)
    assert len(det.predict_all()) == 3


def test_minimal_file_without_success_column(tmp_path: Path) -> None:
    p = tmp_path / "img.csv"
    p.write_text("face, confidence, AU01_r, AU01_c\n0, 0.9, 0.0, 0\n1, 0.8, 4.0, 1\n")
    table = read_openface_aus(p)
    assert [r.face_id for r in table.rows] == [0, 1] and [r.frame for r in table.rows] == [1, 2]
    assert table.failed == []


def test_malformed_value_names_file_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("frame, success, AU12_r\n1, 1, 2.0\n2, 1, abc\n")
    with pytest.raises(OpenFaceFormatError, match=r"bad\.csv:3: column 'AU12_r'.*'abc'"):
        read_openface_aus(p)
    p.write_text("frame, success, AU12_r\n1, 1\n")
    with pytest.raises(OpenFaceFormatError, match=r"bad\.csv:2: 2 values for 3"):
        read_openface_aus(p)
    p.write_text("frame, success, pose_Rx\n1, 1, 0.1\n")
    with pytest.raises(OpenFaceFormatError, match="no AUxx_r"):
        read_openface_aus(p)
    p.write_text("")
    with pytest.raises(OpenFaceFormatError, match="empty"):
        read_openface_aus(p)


def test_landmark_columns_are_intact(of_csv: Path) -> None:
    """The fixture's x_/y_ columns hold the written landmarks (shared with tag_model.faces)."""
    import csv

    with of_csv.open() as fh:
        rd = csv.reader(fh)
        header = [h.strip() for h in next(rd)]
        first = next(rd)
    xs = np.array([float(first[header.index(f"x_{k}")]) for k in range(68)])
    assert xs[0] == 100 and xs[67] == 167
