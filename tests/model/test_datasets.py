"""tag_model.datasets: every reader on fixtures written in that dataset's exact format."""

from __future__ import annotations

import io
import os
from pathlib import Path

import datasets as hf
import numpy as np
import pytest
from PIL import Image
from tag_model.au import AFFECTNET7, AFFECTNET8, FERPLUS, RAFDB, get_label_space
from tag_model.datasets import (
    CANONICAL,
    DatasetFormatError,
    DatasetImageError,
    LoadReport,
    UnsafePathError,
    ferplus_label,
    load_affectnet,
    load_csv,
    load_fer_dataset,
    load_ferplus,
    load_folder,
    load_rafdb,
)

COLUMNS = ["image", "label", "label_id", "landmarks", "source", "path"]


def _img(path: Path, value: int, size: tuple[int, int] = (16, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 255 - value)).save(path)


def _corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")


def _pts(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 90, (68, 2)).round(2).astype(np.float32)


def _lm_field(p: np.ndarray) -> str:
    return ";".join(f"{v:.2f}" for v in p.reshape(-1))


def _check_columns(ds: hf.Dataset, space) -> None:
    assert ds.column_names == COLUMNS
    assert isinstance(ds.features["image"], hf.Image)
    assert ds.features["label_id"].names == list(space.names)
    for row in ds:
        assert space.id_of(row["label"]) == row["label_id"]


# =========================================================================== RAF-DB

RAF_LINES = [
    ("train_00001.jpg", 5),  # sadness
    ("train_00002.jpg", 4),  # happiness
    ("train_00003.jpg", 1),  # surprise
    ("test_0001.jpg", 7),  # neutral
    ("test_0002.jpg", 6),  # anger
]


@pytest.fixture
def rafdb(tmp_path) -> Path:
    root = tmp_path / "RAF"
    (root / "EmoLabel").mkdir(parents=True)
    lines = "".join(f"{n} {c}\n" for n, c in RAF_LINES)
    (root / "EmoLabel" / "list_patition_label.txt").write_text(lines)
    for i, (n, _) in enumerate(RAF_LINES):
        _img(root / "Image" / "aligned" / n.replace(".jpg", "_aligned.jpg"), 40 * i, (100, 100))
        _img(root / "Image" / "original" / n, 40 * i, (120, 90))
    return root


def _label_file(root: Path) -> Path:
    return root / "EmoLabel" / "list_patition_label.txt"


def test_rafdb_train_and_test(rafdb):
    ds, rep = load_rafdb(rafdb, "train", return_report=True)
    _check_columns(ds, RAFDB)
    assert ds["label"] == ["sadness", "happiness", "surprise"]
    assert ds["label_id"] == [4, 3, 0]  # RAF-DB code - 1
    assert ds["path"][0] == "Image/aligned/train_00001_aligned.jpg"
    assert ds["source"] == ["rafdb"] * 3 and ds["landmarks"] == [None] * 3
    assert ds[0]["image"].size == (100, 100)
    assert rep.rows == rep.loaded == 3 and rep.skipped == 0 and rep.missing_landmarks == 3
    assert str(ds.split) == "train" and "3 loaded" in ds.info.description
    test = load_rafdb(rafdb, "test")
    assert test["label"] == ["neutral", "anger"]
    assert len(load_rafdb(rafdb, "all")) == 5
    with pytest.raises(ValueError, match="split"):
        load_rafdb(rafdb, "valid")


def test_rafdb_falls_back_to_original(rafdb):
    (rafdb / "Image" / "aligned" / "train_00002_aligned.jpg").unlink()
    ds, rep = load_rafdb(rafdb, "train", return_report=True)
    assert ds["path"][1] == "Image/original/train_00002.jpg"
    assert ds[1]["image"].size == (120, 90)
    assert rep.fallback_images == ["Image/original/train_00002.jpg"]
    orig = load_rafdb(rafdb, "train", aligned=False)
    assert all(p.startswith("Image/original/") for p in orig["path"])


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("train_00004.jpg 8", "'8'"),  # code outside 1-7
        ("train_00004.jpg 0", "'0'"),
        ("train_00004.jpg happy", "'happy'"),
        ("train_00004.jpg", "'train_00004.jpg'"),  # missing code
        ("train_00004.jpg 3 extra", "extra"),
        ("val_00004.jpg 3", "'val_00004.jpg'"),  # no split prefix
    ],
)
def test_rafdb_malformed_line(rafdb, line, value):
    f = _label_file(rafdb)
    f.write_text(f.read_text() + "\n" + line + "\n")  # blank line 6 is fine; bad line is 7
    with pytest.raises(DatasetFormatError) as ei:
        load_rafdb(rafdb, "test")  # the bad line is reported whatever the split
    err = ei.value
    assert isinstance(err, ValueError)
    assert err.line == 7 and err.path == str(f)
    assert "line 7" in str(err) and value in str(err) and str(f) in str(err)


def test_rafdb_missing_and_corrupt_images(rafdb):
    (rafdb / "Image" / "aligned" / "train_00001_aligned.jpg").unlink()
    (rafdb / "Image" / "original" / "train_00001.jpg").unlink()
    _corrupt(rafdb / "Image" / "aligned" / "train_00003_aligned.jpg")
    with pytest.raises(DatasetImageError) as ei:
        load_rafdb(rafdb, "train")
    msg = str(ei.value)
    assert "1 missing and 1 corrupt" in msg and "train_00001_aligned.jpg (missing)" in msg
    assert "skip_missing=True" in msg
    ds, rep = load_rafdb(rafdb, "train", skip_missing=True, return_report=True)
    assert ds["label"] == ["happiness"]
    assert rep.missing_images == ["Image/aligned/train_00001_aligned.jpg"]
    assert rep.corrupt_images == ["Image/aligned/train_00003_aligned.jpg"]
    assert rep.image_errors["Image/aligned/train_00003_aligned.jpg"]
    assert rep.rows == 3 and rep.loaded == 1 and rep.skipped == 2
    # without decoding, the corrupt file passes (only existence is checked)
    assert len(load_rafdb(rafdb, "train", skip_missing=True, verify_images=False)) == 2


def test_rafdb_path_escape(rafdb, tmp_path):
    f = _label_file(rafdb)
    f.write_text(f.read_text() + "train_/../../../../secret.jpg 3\n")
    with pytest.raises(UnsafePathError, match="escapes the dataset root") as ei:
        load_rafdb(rafdb, "train", skip_missing=True)
    assert ei.value.line == 6 and isinstance(ei.value, DatasetFormatError)


def test_rafdb_symlink_outside_root(rafdb, tmp_path):
    outside = tmp_path / "elsewhere.jpg"
    _img(outside, 10)
    link = rafdb / "Image" / "aligned" / "train_00002_aligned.jpg"
    link.unlink()
    os.symlink(outside, link)
    with pytest.raises(UnsafePathError, match="train_00002"):
        load_rafdb(rafdb, "train")
    # a symlink that stays inside the root is fine
    link.unlink()
    os.symlink(rafdb / "Image" / "original" / "train_00002.jpg", link)
    assert len(load_rafdb(rafdb, "train")) == 3


def test_rafdb_landmark_sidecar(rafdb):
    p = _pts(3)
    (rafdb / "EmoLabel" / "landmarks_68.csv").write_text(
        "image,landmarks\n"
        f"Image/aligned/train_00002_aligned.jpg,{_lm_field(p)}\n"
        "Image/aligned/train_00003_aligned.jpg,\n"
    )
    ds, rep = load_rafdb(rafdb, "train", return_report=True)
    lms = ds["landmarks"]
    assert lms[0] is None and lms[2] is None
    np.testing.assert_allclose(np.asarray(lms[1], np.float32), p, atol=0.006)
    assert rep.missing_landmarks == 2
    np.testing.assert_allclose(ds.with_format("numpy")[1]["landmarks"].shape, (68, 2))
    (rafdb / "EmoLabel" / "landmarks_68.csv").write_text("image,landmarks\nx.jpg,1;2\n")
    with pytest.raises(DatasetFormatError, match="line 2"):
        load_rafdb(rafdb, "train")


def test_rafdb_reads_synthfacs_layout(tmp_path):
    synth = pytest.importorskip("tag_model.synth")
    root = synth.write_rafdb_layout(tmp_path / "synth", 7, size=112, seed=3, test_fraction=2 / 7)
    truth = synth.read_synth_annotations(root)
    ds, rep = load_rafdb(root, "train", return_report=True)
    assert len(ds) == 5 and rep.missing_landmarks == 0
    assert any(f.endswith("synthfacs.npz") for f in rep.files)
    for row in ds:
        name = row["path"].split("/")[-1].replace("_aligned.jpg", ".jpg")
        lm, _aus, label = truth[name]
        assert row["label"] == label and row["image"].size == (112, 112)
        np.testing.assert_array_equal(np.asarray(row["landmarks"], np.float32), lm)
    assert len(load_rafdb(root, "test")) == 2
    # a damaged sidecar is an error, not silently "no landmarks"
    (root / "Annotation" / "synthfacs.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetFormatError, match=r"synthfacs\.npz"):
        load_rafdb(root, "train")
    np.savez(
        root / "Annotation" / "synthfacs.npz",
        names=np.array(["a.jpg"]),
        landmarks=np.zeros((2, 68, 2)),
    )
    with pytest.raises(DatasetFormatError, match=r"landmarks\[N, 68, 2\]"):
        load_rafdb(root, "train")


# =========================================================================== FERPlus

VOTE_HEADER = (
    "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
)
# (usage, image name, votes in file order) -- expectations worked out by hand below
FERPLUS_ROWS = [
    ("Training", "fer0000000.png", [6, 4, 0, 0, 0, 0, 0, 0, 0, 0]),  # 0: neutral 6/10 > 5
    ("Training", "fer0000001.png", [3, 4, 3, 0, 0, 0, 0, 0, 0, 0]),  # 1: top 4/10, unique
    ("Training", "fer0000002.png", [0, 5, 5, 0, 0, 0, 0, 0, 0, 0]),  # 2: 5-5 tie
    ("Training", "fer0000003.png", [0, 0, 0, 0, 0, 0, 0, 0, 7, 3]),  # 3: unknown wins
    ("Training", "fer0000004.png", [0, 0, 0, 0, 0, 0, 0, 0, 1, 9]),  # 4: NF wins
    ("Training", "", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]),  # 5: removed by FERPlus
    ("Training", "fer0000006.png", [1, 0, 0, 0, 0, 0, 0, 9, 0, 0]),  # 6: contempt 9/10
    ("Training", "fer0000007.png", [2, 0, 3, 0, 0, 0, 0, 0, 0, 5]),  # 7: NF 5/10 = half
    ("PublicTest", "fer0000008.png", [0, 0, 0, 10, 0, 0, 0, 0, 0, 0]),  # 8: sadness
    ("PrivateTest", "fer0000009.png", [0, 0, 0, 0, 8, 2, 0, 0, 0, 0]),  # 9: anger
    ("Training", "fer0000010.png", [0] * 10),  # 10: no votes
]


def _pixels(i: int) -> np.ndarray:
    return ((np.arange(48 * 48) * (i + 1)) % 256).astype(np.uint8).reshape(48, 48)


@pytest.fixture
def ferplus(tmp_path) -> Path:
    root = tmp_path / "FERPlus"
    root.mkdir()
    old = ["emotion,pixels,Usage"]
    new = [VOTE_HEADER]
    for i, (usage, name, votes) in enumerate(FERPLUS_ROWS):
        old.append(f"{i % 7},{' '.join(map(str, _pixels(i).reshape(-1)))},{usage}")
        new.append(f"{usage},{name},{','.join(map(str, votes))}")
    (root / "fer2013.csv").write_text("\n".join(old) + "\n")
    (root / "fer2013new.csv").write_text("\n".join(new) + "\n")
    return root


def test_ferplus_majority(ferplus):
    ds, rep = load_ferplus(ferplus, "train", rule="majority", return_report=True)
    _check_columns(ds, FERPLUS)
    assert ds["label"] == ["neutral", "contempt"]
    assert ds["path"] == ["fer0000000.png", "fer0000006.png"]
    assert ds["label_id"] == [0, 7]
    assert rep.rows == 9 and rep.loaded == 2
    assert rep.dropped == {
        "no_majority": 3,  # rows 1, 2, 7
        "unknown": 1,
        "NF": 1,
        "no_image_name": 1,
        "no_votes": 1,
    }
    img = ds[1]["image"]
    assert img.size == (48, 48) and img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), _pixels(6))
    assert ds["landmarks"] == [None, None] and ds["source"] == ["ferplus"] * 2


def test_ferplus_plurality(ferplus):
    ds, rep = load_ferplus(ferplus, "train", rule="plurality", return_report=True)
    assert ds["label"] == ["neutral", "happiness", "contempt"]
    assert rep.dropped == {"tie": 1, "unknown": 1, "NF": 2, "no_image_name": 1, "no_votes": 1}
    np.testing.assert_array_equal(np.asarray(ds[1]["image"]), _pixels(1))


def test_ferplus_other_splits_and_dispatch(ferplus):
    assert load_ferplus(ferplus, "valid")["label"] == ["sadness"]
    assert load_ferplus(ferplus, "PublicTest")["label"] == ["sadness"]
    assert load_ferplus(ferplus, "test")["label"] == ["anger"]
    assert len(load_ferplus(ferplus, "all")) == 4
    ds = load_fer_dataset("FER+", ferplus, "train", rule="plurality")
    assert len(ds) == 3
    with pytest.raises(ValueError, match="rule"):
        load_ferplus(ferplus, rule="mode")


def test_ferplus_label_rule():
    assert ferplus_label([6, 4, 0, 0, 0, 0, 0, 0, 0, 0]) == ("neutral", "ok")
    assert ferplus_label([5, 5, 0, 0, 0, 0, 0, 0, 0, 0]) == (None, "no_majority")
    assert ferplus_label([0, 3, 2, 2, 0, 0, 0, 0, 0, 0], "majority") == (None, "no_majority")
    assert ferplus_label([0, 3, 2, 2, 0, 0, 0, 0, 0, 0], "plurality") == ("happiness", "ok")
    assert ferplus_label([0, 0, 0, 0, 0, 0, 0, 0, 0, 6], "majority") == (None, "NF")
    assert ferplus_label([0, 0, 0, 0, 0, 0, 4, 0, 4, 0], "plurality") == (None, "tie")
    assert ferplus_label([0, 0, 0, 0, 0, 0, 4, 0, 5, 0], "plurality") == (None, "unknown")
    assert ferplus_label([0, 0, 0, 0, 0, 1, 0, 0, 0, 0], "majority") == ("disgust", "ok")


def _edit_line(path: Path, lineno: int, fn) -> None:
    lines = path.read_text().split("\n")
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("\n".join(lines))


def test_ferplus_wrong_pixel_count(ferplus):
    f = ferplus / "fer2013.csv"
    _edit_line(f, 2, lambda s: s.replace(",Training", " 7,Training"))  # 2305 pixels
    with pytest.raises(DatasetFormatError) as ei:
        load_ferplus(ferplus, "train")
    assert ei.value.line == 2 and ei.value.path == str(f) and "2305 values" in str(ei.value)


def test_ferplus_bad_pixel_and_votes(ferplus):
    f = ferplus / "fer2013.csv"
    _edit_line(f, 8, lambda s: s.replace(",", ",300 ", 1).replace(" 0 ", " ", 1))
    with pytest.raises(DatasetFormatError, match="outside 0-255") as ei:
        load_ferplus(ferplus, "train")
    assert ei.value.line == 8 and ei.value.value == 300

    g = ferplus / "fer2013new.csv"
    _edit_line(g, 3, lambda s: s.replace(",4,3,", ",four,3,"))
    with pytest.raises(DatasetFormatError, match="'four'") as ei:
        load_ferplus(ferplus, "test")  # malformed rows fail whatever the split
    assert ei.value.line == 3 and ei.value.path == str(g)


def test_ferplus_files_disagree(ferplus):
    g = ferplus / "fer2013new.csv"
    _edit_line(g, 10, lambda s: s.replace("PublicTest", "Training"))
    with pytest.raises(DatasetFormatError, match="Usage differs") as ei:
        load_ferplus(ferplus, "train")
    assert ei.value.line == 10
    _edit_line(g, 10, lambda s: s.replace("Training", "PublicTest"))
    assert load_ferplus(ferplus, "valid")["label"] == ["sadness"]

    lines = (ferplus / "fer2013.csv").read_text().rstrip("\n").split("\n")
    (ferplus / "fer2013.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DatasetFormatError, match="same number of rows"):
        load_ferplus(ferplus, "train")


# =========================================================================== AffectNet

AFFECTNET_HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
AFFECTNET_ROWS = [
    ("1/a0.jpg", 0),  # neutral
    ("1/a1.jpg", 1),  # happy
    ("2/a2.png", 7),  # contempt
    ("2/a3.jpg", 8),  # none
    ("3/a4.jpg", 10),  # no-face
    ("3/a5.jpg", 6),  # anger
]


def _affectnet_line(rel: str, code: int, i: int, landmarks: str | None = None) -> str:
    lm = _lm_field(_pts(i)) if landmarks is None else landmarks
    return f"{rel},{10 + i},{12 + i},{80 + i},{81 + i},{lm},{code},0.25,-0.5"


@pytest.fixture
def affectnet(tmp_path) -> Path:
    root = tmp_path / "AffectNet"
    root.mkdir()
    lines = [AFFECTNET_HEADER] + [
        _affectnet_line(rel, code, i) for i, (rel, code) in enumerate(AFFECTNET_ROWS)
    ]
    (root / "training.csv").write_text("\n".join(lines) + "\n")
    (root / "validation.csv").write_text(
        AFFECTNET_HEADER + "\n" + _affectnet_line("4/v0.jpg", 3, 9, landmarks="") + "\n"
    )
    for i, (rel, _) in enumerate(AFFECTNET_ROWS):
        _img(root / "Manually_Annotated_Images" / rel, 30 * i, (120, 120))
    _img(root / "Manually_Annotated_Images" / "4/v0.jpg", 5)
    return root


def test_affectnet_7_and_8_classes(affectnet):
    ds, rep = load_affectnet(affectnet, "train", classes=7, return_report=True)
    _check_columns(ds, AFFECTNET7)
    assert ds["label"] == ["neutral", "happiness", "anger"]
    assert ds["path"][0] == "Manually_Annotated_Images/1/a0.jpg"
    assert rep.rows == 6 and rep.dropped == {"contempt": 1, "none": 1, "no-face": 1}
    np.testing.assert_allclose(np.asarray(ds["landmarks"][2], np.float32), _pts(5), atol=0.006)
    ds8, rep8 = load_affectnet(affectnet, "train", classes=8, return_report=True)
    _check_columns(ds8, AFFECTNET8)
    assert ds8["label"] == ["neutral", "happiness", "contempt", "anger"]
    assert ds8["label_id"] == [0, 1, 7, 6]
    assert rep8.dropped == {"none": 1, "no-face": 1}
    with pytest.raises(ValueError, match="7 or 8"):
        load_affectnet(affectnet, classes=6)


def test_affectnet_validation_extra_columns_and_dispatch(affectnet):
    ds, rep = load_affectnet(affectnet, "validation", extra_columns=True, return_report=True)
    assert ds["label"] == ["surprise"] and ds["landmarks"] == [None]
    assert rep.missing_landmarks == 1
    assert ds.column_names == [*COLUMNS, "face_box", "valence", "arousal"]
    assert ds[0]["face_box"] == [19.0, 21.0, 108.0, 111.0]  # x, y, x + w, y + h
    assert ds[0]["valence"] == 0.25 and ds[0]["arousal"] == -0.5
    assert load_fer_dataset("affectnet8", affectnet, "train")["label"][2] == "contempt"
    assert len(load_fer_dataset("affectnet", affectnet, "test")) == 1  # validation is the test set


def test_affectnet_without_header(affectnet):
    f = affectnet / "training.csv"
    f.write_text(f.read_text().split("\n", 1)[1])
    assert load_affectnet(affectnet)["label"] == ["neutral", "happiness", "anger"]
    f.write_text("\n" + f.read_text())  # blank first line: no header, no data
    with pytest.raises(DatasetFormatError, match="missing column"):
        load_affectnet(affectnet)


@pytest.mark.parametrize(
    ("bad", "value"),
    [
        (_affectnet_line("1/z.jpg", 11, 0), "'11'"),
        (_affectnet_line("1/z.jpg", 0, 0).replace(",0,0.25", ",x,0.25"), "'x'"),
        (_affectnet_line("1/z.jpg", 0, 0, landmarks="1;2;3"), "'1;2;3'"),
        (_affectnet_line("1/z.jpg", 0, 0).replace(",10,12,", ",ten,12,"), "'ten'"),
        ("1/z.jpg,1,2,3", "4 fields"),
    ],
)
def test_affectnet_malformed_row(affectnet, bad, value):
    f = affectnet / "training.csv"
    f.write_text(f.read_text() + bad + "\n")
    with pytest.raises(DatasetFormatError) as ei:
        load_affectnet(affectnet, "train")
    assert ei.value.line == 8 and value in str(ei.value) and str(f) in str(ei.value)


@pytest.mark.parametrize("rel", ["../outside.jpg", "1/../../outside.jpg", "/etc/passwd"])
def test_affectnet_path_escape(affectnet, rel):
    f = affectnet / "training.csv"
    f.write_text(f.read_text() + _affectnet_line(rel, 0, 0) + "\n")
    with pytest.raises(UnsafePathError) as ei:
        load_affectnet(affectnet, "train", skip_missing=True)
    assert ei.value.line == 8 and rel in str(ei.value)


def test_affectnet_missing_image(affectnet):
    (affectnet / "Manually_Annotated_Images" / "1" / "a1.jpg").unlink()
    (affectnet / "Manually_Annotated_Images" / "3" / "a4.jpg").unlink()  # no-face: dropped anyway
    with pytest.raises(DatasetImageError, match="1 missing") as ei:
        load_affectnet(affectnet)
    assert ei.value.report.missing_images == ["Manually_Annotated_Images/1/a1.jpg"]
    ds, rep = load_affectnet(affectnet, skip_missing=True, return_report=True)
    assert ds["label"] == ["neutral", "anger"] and rep.loaded == 2


# =========================================================================== folder / CSV


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "faces"
    _img(root / "happy" / "a.png", 10)
    _img(root / "happy" / "sub" / "b.jpg", 20)
    _img(root / "Sad" / "c.jpg", 30)
    _img(root / "neutral" / "d.bmp", 40)
    (root / "happy" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("readme")
    (root / ".cache").mkdir()
    (root / "happy" / ".DS_Store").write_text("x")
    return root


def test_load_folder(folder):
    ds, rep = load_folder(folder, return_report=True)
    _check_columns(ds, CANONICAL)
    assert ds["path"] == ["Sad/c.jpg", "happy/a.png", "happy/sub/b.jpg", "neutral/d.bmp"]
    assert ds["label"] == ["sadness", "happiness", "happiness", "neutral"]
    assert ds["label_id"] == [2, 1, 1, 0]
    assert sorted(rep.ignored_files) == ["README.md", "happy/notes.txt"]
    raf = load_folder(folder, label_space="rafdb")
    assert raf["label_id"] == [RAFDB.id_of(x) for x in raf["label"]]
    assert raf.features["label_id"].names == list(RAFDB.names)


def test_load_folder_errors(folder, tmp_path):
    _img(folder / "contempt" / "e.png", 50)
    # a class outside the label space is dropped and counted, not an error (see below)
    raf, rep = load_folder(folder, label_space=get_label_space("rafdb"), return_report=True)
    assert "contempt" not in raf["label"] and rep.dropped == {"not_in_label_space:contempt": 1}
    _img(folder / "dogs" / "f.png", 60)
    with pytest.raises(DatasetFormatError, match="'dogs'"):
        load_folder(folder)
    (folder / "dogs" / "f.png").unlink()
    (folder / "dogs").rmdir()
    _corrupt(folder / "happy" / "broken.jpg")
    with pytest.raises(DatasetImageError, match=r"happy/broken\.jpg"):
        load_folder(folder)
    ds, rep = load_folder(folder, skip_missing=True, return_report=True)
    assert rep.corrupt_images == ["happy/broken.jpg"] and len(ds) == 5
    outside = tmp_path / "outside.png"
    _img(outside, 1)
    os.symlink(outside, folder / "happy" / "link.png")
    with pytest.raises(UnsafePathError):
        load_folder(folder, skip_missing=True)


def test_load_folder_split(folder, tmp_path):
    root = tmp_path / "split"
    _img(root / "train" / "angry" / "x.png", 1)
    _img(root / "test" / "fearful" / "y.png", 2)
    assert load_folder(root, "train")["label"] == ["anger"]
    assert load_fer_dataset("folder", root, "test")["label"] == ["fear"]


def test_load_csv(tmp_path):
    root = tmp_path / "csvdata"
    _img(root / "imgs" / "a.png", 1)
    _img(root / "imgs" / "b.png", 2)
    _img(root / "imgs" / "c.png", 3)
    p = _pts(1)
    (root / "list.csv").write_text(
        "file, emotion, split, lm\n"
        f"imgs/a.png,Happy,train,{_lm_field(p)}\n"
        "imgs/b.png,  disgusted ,train,\n"
        f'imgs/c.png,contempt,test,"{np.round(p, 2).tolist()}"\n'
    )
    ds, rep = load_csv(root / "list.csv", "file", "emotion", landmarks_col="lm", return_report=True)
    _check_columns(ds, CANONICAL)
    assert ds["label"] == ["happiness", "disgust", "contempt"] and ds["source"][0] == "csv"
    np.testing.assert_allclose(np.asarray(ds["landmarks"][0]), p, atol=0.006)
    np.testing.assert_allclose(np.asarray(ds["landmarks"][2]), p, atol=0.006)
    assert ds["landmarks"][1] is None and rep.missing_landmarks == 1
    tr = load_fer_dataset("csv", root / "list.csv", "train", image_col="file", label_col="emotion")
    assert tr["path"] == ["imgs/a.png", "imgs/b.png"]


@pytest.mark.parametrize(
    ("row", "exc", "value"),
    [
        ("imgs/a.png,joyful", DatasetFormatError, "'joyful'"),
        ("imgs/a.png", DatasetFormatError, "1 fields"),
        ("../etc/x.png,happy", UnsafePathError, "'../etc/x.png'"),
        ("/abs/x.png,happy", UnsafePathError, "'/abs/x.png'"),
    ],
)
def test_load_csv_bad_rows(tmp_path, row, exc, value):
    root = tmp_path / "c"
    _img(root / "imgs" / "a.png", 1)
    (root / "l.csv").write_text(f"path,label\nimgs/a.png,sad\n{row}\n")
    with pytest.raises(exc) as ei:
        load_csv(root / "l.csv", skip_missing=True)
    assert ei.value.line == 3 and value in str(ei.value)


def test_load_csv_missing_image_and_columns(tmp_path):
    root = tmp_path / "c"
    _img(root / "a.png", 1)
    (root / "l.csv").write_text("path,label\na.png,sad\nb.png,happy\n")
    with pytest.raises(DatasetImageError, match=r"b\.png \(missing\)"):
        load_csv(root / "l.csv")
    ds, rep = load_csv(root / "l.csv", skip_missing=True, return_report=True)
    assert len(ds) == 1 and rep.missing_images == ["b.png"]
    with pytest.raises(DatasetFormatError, match="missing column"):
        load_csv(root / "l.csv", label_col="emotion")


def test_empty_result_still_typed(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    (root / "l.csv").write_text("path,label\n")
    ds = load_csv(root / "l.csv")
    assert len(ds) == 0 and ds.column_names == COLUMNS


def test_dispatch_unknown_source():
    with pytest.raises(ValueError, match="rafdb, ferplus, affectnet, folder, csv"):
        load_fer_dataset("imagenet", ".")


def test_load_report_summary():
    rep = LoadReport(source="x", split="train", rows=3, loaded=1)
    rep.drop("tie")
    rep.drop("tie")
    rep.missing_images.append("a.png")
    s = rep.summary()
    assert "x[train]" in s and "tie=2" in s and "1 missing" in s


def test_datasets_round_trip_to_disk(rafdb, tmp_path):
    ds = load_rafdb(rafdb, "train")
    ds.save_to_disk(str(tmp_path / "saved"))
    back = hf.load_from_disk(str(tmp_path / "saved"))
    assert back["label"] == ds["label"] and back.features == ds.features
    assert isinstance(back[0]["image"], Image.Image)
    buf = io.BytesIO()
    back[0]["image"].save(buf, "PNG")
    assert buf.tell() > 0


# =========================================================================== label_space


def test_rafdb_label_space_subset_drops_and_counts(rafdb, caplog):
    with caplog.at_level("WARNING", logger="tag_model.datasets"):
        ds, rep = load_rafdb(
            rafdb, "all", label_space=["Happy", "sadness", "anger"], return_report=True
        )
    assert ds["label"] == ["sadness", "happiness", "anger"]
    assert ds["label_id"] == [1, 0, 2]  # re-indexed to the subset, in its order
    assert ds.features["label_id"].names == ["happiness", "sadness", "anger"]
    assert rep.rows == 5 and rep.loaded == 3
    assert rep.dropped == {"not_in_label_space:neutral": 1, "not_in_label_space:surprise": 1}
    assert rep.label_space == "custom"
    assert "not_in_label_space:neutral=1" in ds.info.description
    assert "outside label space 'custom'" in caplog.text and "surprise=1" in caplog.text
    # a named space: RAF-DB rows all fit FERPlus's eight classes, ids in FERPlus order
    fp, rep2 = load_rafdb(rafdb, "train", label_space="ferplus", return_report=True)
    _check_columns(fp, FERPLUS)
    assert fp["label_id"] == [FERPLUS.id_of(x) for x in ["sadness", "happiness", "surprise"]]
    assert rep2.dropped == {} and rep2.label_space == "ferplus"
    # the default is RAF-DB's own space
    assert load_rafdb(rafdb, "train", return_report=True)[1].label_space == "rafdb"


def test_ferplus_label_space_after_the_vote(ferplus):
    ds, rep = load_ferplus(ferplus, "train", label_space="rafdb", return_report=True)
    _check_columns(ds, RAFDB)
    assert ds["label"] == ["neutral"]  # contempt is not a RAF-DB class
    assert rep.dropped["not_in_label_space:contempt"] == 1
    assert rep.dropped["no_majority"] == 3  # the voting rule's drops are still counted


def test_affectnet_label_space_picks_classes(affectnet):
    ds, rep = load_affectnet(affectnet, "train", label_space="affectnet8", return_report=True)
    _check_columns(ds, AFFECTNET8)  # contempt in the space: classes=8 by default
    assert ds["label"] == ["neutral", "happiness", "contempt", "anger"]
    sub, rep2 = load_affectnet(
        affectnet, "train", label_space=["anger", "neutral"], return_report=True
    )
    assert sub["label"] == ["neutral", "anger"] and sub["label_id"] == [1, 0]
    assert rep2.dropped == {
        "contempt": 1,  # AffectNet-7's rule (the space has no contempt)
        "none": 1,
        "no-face": 1,
        "not_in_label_space:happiness": 1,
    }
    assert rep.dropped == {"none": 1, "no-face": 1}


def test_csv_and_dispatch_label_space(tmp_path, rafdb):
    root = tmp_path / "csvdata"
    for i, name in enumerate("abc"):
        _img(root / f"{name}.png", i)
    (root / "l.csv").write_text("path,label\na.png,happy\nb.png,contempt\nc.png,sad\n")
    ds, rep = load_csv(root / "l.csv", label_space="rafdb", return_report=True)
    assert ds["label"] == ["happiness", "sadness"]
    assert ds["label_id"] == [RAFDB.id_of("happiness"), RAFDB.id_of("sadness")]
    assert rep.dropped == {"not_in_label_space:contempt": 1}
    for name in ("rafdb", "ferplus", "affectnet", "folder", "csv"):
        assert "label_space" in load_fer_dataset.__doc__ and name in load_fer_dataset.__doc__
    raf = load_fer_dataset("rafdb", rafdb, "test", label_space=["anger"])
    assert raf["label"] == ["anger"] and raf.features["label_id"].names == ["anger"]


def test_label_space_errors(rafdb):
    with pytest.raises(ValueError, match="'joy!' is not an emotion"):
        load_rafdb(rafdb, label_space=["happiness", "joy!"])
    with pytest.raises(ValueError, match="listed twice"):
        load_rafdb(rafdb, label_space=["happy", "happiness"])
    with pytest.raises(ValueError, match="unknown label space 'imagenet'"):
        load_rafdb(rafdb, label_space="imagenet")
    with pytest.raises(ValueError, match="at least one"):
        load_rafdb(rafdb, label_space=[])


# ---------------------------------------------------------------- newer / generated layouts


def _jpg(path: Path, size: int = 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (120, 90, 80)).save(path, "JPEG")


@pytest.fixture
def affectnet_npy(tmp_path):
    """The newer AffectNet release: train_set/images + annotations/<id>_{exp,lnd,val,aro}.npy."""
    root = tmp_path / "AffectNetNew"
    rng = np.random.default_rng(0)
    codes = {"0": "1", "1": "7", "2": "3", "10": "9"}  # 9 (uncertain) is always dropped
    for split in ("train_set", "val_set"):
        ann = root / split / "annotations"
        ann.mkdir(parents=True)
        for sid, code in codes.items():
            _jpg(root / split / "images" / f"{sid}.jpg")
            np.save(ann / f"{sid}_exp.npy", np.array(code))  # stored as a string, as released
            np.save(ann / f"{sid}_lnd.npy", (rng.uniform(5, 60, 136)).astype(np.float32))
            np.save(ann / f"{sid}_val.npy", np.array("0.25"))
            np.save(ann / f"{sid}_aro.npy", np.array("-0.5"))
    return root


def test_affectnet_newer_npy_release(affectnet_npy):
    ds, rep = load_affectnet(
        affectnet_npy, "train", classes=8, extra_columns=True, return_report=True
    )
    assert ds["path"] == [f"train_set/images/{i}.jpg" for i in ("0", "1", "2")]  # sorted ids
    assert ds["label"] == ["happiness", "contempt", "surprise"]
    assert ds["label_id"] == [AFFECTNET8.id_of(x) for x in ds["label"]]
    lm = np.load(affectnet_npy / "train_set" / "annotations" / "0_lnd.npy").reshape(68, 2)
    np.testing.assert_allclose(np.asarray(ds[0]["landmarks"]), lm, rtol=1e-6)
    assert ds[0]["valence"] == pytest.approx(0.25) and ds[0]["arousal"] == pytest.approx(-0.5)
    assert ds[0]["face_box"] == [0.0, 0.0, 64.0, 64.0]
    assert rep.rows == 4 and sum(rep.dropped.values()) == 1
    seven = load_affectnet(affectnet_npy, "val")  # 7 classes: contempt dropped
    assert seven["label"] == ["happiness", "surprise"]
    via = load_fer_dataset("affectnet", affectnet_npy, "train", label_space="affectnet8")
    assert "contempt" in via["label"]


def test_affectnet_newer_release_bad_annotation(affectnet_npy):
    ann = affectnet_npy / "train_set" / "annotations"
    np.save(ann / "1_lnd.npy", np.zeros(10, dtype=np.float32))
    with pytest.raises(DatasetFormatError, match=r"1_lnd\.npy.*136 values"):
        load_affectnet(affectnet_npy, "train", classes=8)
    (ann / "0_exp.npy").unlink()  # id 0 is read first
    with pytest.raises(DatasetFormatError, match=r"0_exp\.npy.*missing expression"):
        load_affectnet(affectnet_npy, "train", classes=8)


@pytest.fixture
def ferplus_generated(tmp_path):
    """FERPlus as Microsoft's generate_training_data.py writes it."""
    root = tmp_path / "FERPlusGen"
    rows = {
        "FER2013Train": [
            ("fer0000000.png", "4,0,0,1,3,2,0,0,0,0"),  # no majority (4 of 10): dropped
            ("fer0000001.png", "0,10,0,0,0,0,0,0,0,0"),  # happiness
            ("fer0000002.png", "0,0,0,0,0,0,0,7,1,0"),  # contempt
        ],
        "FER2013Valid": [("fer0028710.png", "9,1,0,0,0,0,0,0,0,0")],  # neutral
        "FER2013Test": [("fer0032220.png", "0,0,0,0,0,0,0,0,0,10")],  # NF: dropped
    }
    for folder, items in rows.items():
        d = root / folder
        d.mkdir(parents=True)
        lines = []
        for name, votes in items:
            Image.new("L", (48, 48), 128).save(d / name)
            lines.append(f'{name},"(0, 0, 48, 48)",{votes}')
        (d / "label.csv").write_text("\n".join(lines) + "\n")
    return root


def test_ferplus_generator_layout(ferplus_generated):
    ds, rep = load_ferplus(ferplus_generated, "train", return_report=True)
    assert ds["path"] == ["FER2013Train/fer0000001.png", "FER2013Train/fer0000002.png"]
    assert ds["label"] == ["happiness", "contempt"]
    assert ds["label_id"] == [FERPLUS.id_of("happiness"), FERPLUS.id_of("contempt")]
    assert ds[0]["image"].size == (48, 48)
    assert rep.rows == 3 and rep.dropped == {"no_majority": 1}
    assert load_fer_dataset("ferplus", ferplus_generated, "valid")["label"] == ["neutral"]
    assert len(load_ferplus(ferplus_generated, "all")) == 3
    (ferplus_generated / "FER2013Train" / "fer0000002.png").unlink()
    with pytest.raises(DatasetImageError):
        load_ferplus(ferplus_generated, "train")
    assert len(load_ferplus(ferplus_generated, "train", skip_missing=True)) == 1


def test_ferplus_generator_layout_bad_votes(ferplus_generated):
    label = ferplus_generated / "FER2013Valid" / "label.csv"
    label.write_text('fer0028710.png,"(0, 0, 48, 48)",9,x,0,0,0,0,0,0,0,0\n')
    with pytest.raises(
        DatasetFormatError, match=r"label\.csv, line 1: vote count 'happiness'.*'x'"
    ):
        load_ferplus(ferplus_generated, "valid")
