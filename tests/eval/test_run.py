"""``tag-eval run``: outputs, determinism, resume, parsing, and clear errors on bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from tag_eval import EvalInputError
from tag_eval.cli import main
from tag_eval.run import RunConfig, _parse, load_eval_dataset, run_eval

from ._fixtures import OracleGenerator, synth_rafdb_root, tiny_model_dir


@pytest.fixture(scope="module")
def rafdb_root(tmp_path_factory):
    return synth_rafdb_root(tmp_path_factory)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


def _cfg(root, out, **kw) -> RunConfig:
    base = dict(
        model_name_or_path="oracle",
        dataset="rafdb",
        data_root=str(root),
        split="test",
        output_dir=str(out),
        per_device_eval_batch_size=3,
        max_new_tokens=8,
        n_boot=200,
    )
    base.update(kw)
    return RunConfig(**base)


def _records(out):
    return [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]


def test_oracle_run_scores_perfectly(rafdb_root, tmp_path):
    ds, space = load_eval_dataset("rafdb", rafdb_root, "test")
    gen = OracleGenerator(ds, wrong_every=3)
    m = run_eval(_cfg(rafdb_root, tmp_path / "r"), generator=gen)
    recs = _records(tmp_path / "r")
    n = len(ds)
    assert len(recs) == n and m["classification"]["n"] == n
    wrong = sum(1 for i in range(n) if i % 3 == 0)
    assert m["classification"]["accuracy"] == pytest.approx((n - wrong) / n)
    assert sum(r["correct"] for r in recs) == n - wrong
    # every answer parsed; the format is ok wherever there was an AU to ground (a trace
    # without any boxed step is a format error by the grammar: NO_BOXED_STEP)
    cm = np.asarray(m["classification"]["confusion"])
    assert cm.sum() == n and m["classification"]["answered_rate"] == 1.0
    for r in recs:
        assert r["parse"]["format_ok"] == bool(r["activated"]), r["parse"]
    # boxes went 0-1000 -> pixels and match the detector's activated list (rounding only)
    f = m["faithfulness"]
    assert f["grounding_f"]["mean"] > 0.95
    assert f["au_precision"]["mean"] == 1.0 and f["au_recall"]["mean"] == 1.0
    assert f["unactivated_au_rate"]["mean"] in (0.0, None)
    r = next(r for r in recs if r["activated"])
    assert np.allclose(
        [p["box"] for p in r["pred_pairs"]], [a["box"] for a in r["activated"]], atol=0.1
    )
    assert (tmp_path / "r" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["label_space"] == {"name": "rafdb", "names": list(space.names)}
    assert gen.calls == [3] * (n // 3) + ([n % 3] if n % 3 else [])


def test_tiny_model_run_is_deterministic_and_resumes(rafdb_root, model_dir, tmp_path):
    cfg = _cfg(
        rafdb_root,
        tmp_path / "a",
        model_name_or_path=str(model_dir),
        limit=5,
        per_device_eval_batch_size=2,
    )
    m = run_eval(cfg)
    recs = _records(tmp_path / "a")
    assert len(recs) == 5
    for r in recs:
        assert set(r) >= {
            "id",
            "path",
            "label",
            "prediction",
            "trace",
            "parse",
            "timing",
            "pred_pairs",
            "activated",
            "label_space",
        }
        assert r["timing"]["new_tokens"] <= 8 and r["timing"]["seconds"] > 0
        assert r["landmarks_source"] == "dataset"
    assert m["classification"]["n"] == 5
    # same seed, fresh directory -> identical traces
    run_eval(
        _cfg(
            rafdb_root,
            tmp_path / "b",
            model_name_or_path=str(model_dir),
            limit=5,
            per_device_eval_batch_size=2,
        )
    )
    assert [r["trace"] for r in _records(tmp_path / "b")] == [r["trace"] for r in recs]
    # interrupted run: two full records plus a torn third line -> resume regenerates the rest
    c = tmp_path / "c"
    c.mkdir()
    shutil.copy(tmp_path / "a" / "run.json", c / "run.json")
    lines = (tmp_path / "a" / "samples.jsonl").read_text().splitlines(keepends=True)
    (c / "samples.jsonl").write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    m2 = run_eval(
        _cfg(
            rafdb_root, c, model_name_or_path=str(model_dir), limit=5, per_device_eval_batch_size=2
        )
    )
    resumed = _records(c)
    assert [r["id"] for r in resumed] == [r["id"] for r in recs]
    assert [r["trace"] for r in resumed] == [r["trace"] for r in recs]
    assert m2["classification"] == m["classification"]


def test_resume_only_generates_missing_batches(rafdb_root, tmp_path):
    ds, _ = load_eval_dataset("rafdb", rafdb_root, "test")
    out = tmp_path / "r"
    run_eval(_cfg(rafdb_root, out, limit=6), generator=OracleGenerator(ds))
    lines = (out / "samples.jsonl").read_text().splitlines(keepends=True)
    (out / "samples.jsonl").write_text("".join(lines[:4]))  # batch 0 done, batch 1 partly
    gen = OracleGenerator(ds)
    run_eval(_cfg(rafdb_root, out, limit=6), generator=gen)
    assert gen.calls == [3]  # only batch 1 (samples 3-5), regenerated whole
    assert len(_records(out)) == 6
    gen2 = OracleGenerator(ds)
    run_eval(_cfg(rafdb_root, out, limit=6), generator=gen2)
    assert gen2.calls == []  # complete: nothing to do, metrics recomputed
    # extending the limit continues the same run
    run_eval(_cfg(rafdb_root, out, limit=9), generator=gen2)
    assert gen2.calls == [3] and len(_records(out)) == 9


def test_parse_converts_boxes_and_never_raises():
    from tag_model.backbones import get_adapter

    ad = get_adapter("qwen2_vl")
    names = ("happiness", "sadness")
    text = (
        "Global analysis: smile\nVerification loop:\n"
        "Inspect cheeks → raised → AU6 <bbox>[100,200,500,600]</bbox>\n"
        "Inspect mouth → corners up → AU12 AU25 <bbox>[0,500,1000,1000]</bbox>\n"
        "Final conclusion: Combined AU6 + AU12 indicate happiness.\n<answer> happiness </answer>"
    )
    p = _parse(text, names, ad, (200, 100))
    assert p["prediction"] == "happiness" and p["prediction_id"] == 0
    assert p["parse"]["format_ok"] and p["parse"]["reasons"] == []
    assert p["parse"]["well_formed"]
    # a complete trace that boxes nothing breaks the grammar but is well formed
    unboxed = text.replace(" <bbox>[100,200,500,600]</bbox>", "").replace(
        " <bbox>[0,500,1000,1000]</bbox>", ""
    )
    q = _parse(unboxed, names, ad, (200, 100))
    assert not q["parse"]["format_ok"] and q["parse"]["well_formed"], q["parse"]
    assert q["pred_pairs"] == [] and q["prediction"] == "happiness"
    assert p["pred_pairs"] == [
        {"au": 6, "box": [20.0, 20.0, 100.0, 60.0]},
        {"au": 12, "box": [0.0, 50.0, 200.0, 100.0]},
        {"au": 25, "box": [0.0, 50.0, 200.0, 100.0]},
    ]
    assert p["conclusion_aus"] == [6, 12]
    for junk in [
        "",
        "<answer>",
        "\x00" * 10,
        "AU6 <bbox>[nan,1,2,3]</bbox> <answer> fear </answer>",
        "<answer> happiness </answer><answer> sadness </answer>",
    ]:
        q = _parse(junk, names, ad, (200, 100))
        # no junk has the trace's sections, and none names exactly one known answer
        assert q["prediction_id"] == -1 and q["prediction"] is None, junk
        assert not q["parse"]["format_ok"] and not q["parse"]["answer_ok"]
        assert not q["parse"]["well_formed"]
        assert q["parse"]["reasons"] and q["pred_pairs"] == []
    assert _parse("<answer> fear </answer>", names, ad, (10, 10))["prediction_id"] == -1


def test_missing_model_path_is_a_clear_error(rafdb_root, tmp_path, capsys):
    rc = main(
        [
            "run",
            "--model_name_or_path",
            str(tmp_path / "no_such_ckpt"),
            "--dataset",
            "rafdb",
            "--data_root",
            str(rafdb_root),
            "--output_dir",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 3  # missing model
    assert "model path not found" in err and "no_such_ckpt" in err
    assert len(err.strip().splitlines()) == 1
    not_ckpt = tmp_path / "empty_dir"
    not_ckpt.mkdir()
    args = ["--dataset", "rafdb", "--data_root", str(rafdb_root)]
    rc = main(["run", "--model_name_or_path", str(not_ckpt), *args])
    assert rc == 3 and "no config.json" in capsys.readouterr().err


def test_empty_dataset_is_a_clear_error(tmp_path, capsys):
    root = tmp_path / "raf"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("")
    with pytest.raises(EvalInputError, match=r"rafdb at .* \(split 'test'\) has no samples"):
        load_eval_dataset("rafdb", root, "test")
    model = ["run", "--model_name_or_path", "org/model", "--dataset", "rafdb"]
    rc = main([*model, "--data_root", str(root)])
    assert rc == 4 and "has no samples" in capsys.readouterr().err
    rc = main([*model, "--data_root", str(tmp_path / "nope")])
    assert rc == 4 and "dataset root not found" in capsys.readouterr().err


def test_jsonl_from_another_label_space_is_rejected(rafdb_root, tmp_path):
    ds, _ = load_eval_dataset("rafdb", rafdb_root, "test")
    out = tmp_path / "r"
    out.mkdir()
    rec = {"id": "x", "label": "contempt", "label_space": "ferplus"}
    (out / "samples.jsonl").write_text(json.dumps(rec) + "\n")
    with pytest.raises(
        EvalInputError, match=r"samples.jsonl:1: record 'x' is from label space 'ferplus'"
    ):
        run_eval(_cfg(rafdb_root, out), generator=OracleGenerator(ds))
    # a run.json of another label space is refused too
    (out / "samples.jsonl").unlink()
    (out / "run.json").write_text(
        json.dumps({"label_space": {"name": "ferplus", "names": ["neutral"]}})
    )
    with pytest.raises(EvalInputError, match="label space 'ferplus'"):
        run_eval(_cfg(rafdb_root, out), generator=OracleGenerator(ds))


def test_changed_settings_refuse_to_resume(rafdb_root, tmp_path):
    ds, _ = load_eval_dataset("rafdb", rafdb_root, "test")
    out = tmp_path / "r"
    run_eval(_cfg(rafdb_root, out, limit=3), generator=OracleGenerator(ds))
    with pytest.raises(EvalInputError, match="prompt was 'full' and is now 'zeroshot'"):
        run_eval(
            _cfg(rafdb_root, out, limit=3, prompt_style="zeroshot"), generator=OracleGenerator(ds)
        )
    # a run written before the rename says "grounded": the same prompt as "full"
    meta = json.loads((out / "run.json").read_text())
    assert meta["prompt"] == "full"
    (out / "run.json").write_text(json.dumps({**meta, "prompt": "grounded"}))
    run_eval(_cfg(rafdb_root, out, limit=3), generator=OracleGenerator(ds))


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    from tag_eval._records import read_records

    p = tmp_path / "s.jsonl"
    p.write_text('{"id": 1}\n{oops\n{"id": 3}\n')
    with pytest.raises(EvalInputError, match=r"s.jsonl:2: invalid JSONL record"):
        read_records(p)
    p.write_text('{"id": 1}\n{"id": 2')
    recs, valid = read_records(p)
    assert recs == [{"id": 1}] and valid == len('{"id": 1}\n')
    assert p.read_text() == '{"id": 1}\n{"id": 2'  # reading alone leaves the file as it is
    assert read_records(p, repair=True) == (recs, valid)
    assert p.read_text() == '{"id": 1}\n'  # repair cuts the torn line off


def test_help_explains_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("run", "compare", "report", "faithfulness", "--import_answers", "resume"):
        assert word in out
    assert "exit status" in out and "--debug" in out
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--detector", "zeroshot", "--limit", "--data_root", "--prompt_style"):
        assert flag in out
    assert "--per_device_eval_batch_size" in out and "--skip_missing" in out
    assert "exit status" in out


def test_openface_detector_file_and_folder(rafdb_root, tmp_path):
    ds, _ = load_eval_dataset("rafdb", rafdb_root, "test")
    # one CSV for the sequence: frame k is sample k-1; AU12 strong everywhere, AU4 in frame 2
    header = "frame, face_id, timestamp, confidence, success, AU04_r, AU12_r, AU04_c, AU12_c"
    rows = [
        f"{k}, 0, 0.0, 0.98, 1, {3.0 if k == 2 else 0.0}, 3.0, {int(k == 2)}, 1" for k in (1, 2, 3)
    ]
    csv_file = tmp_path / "openface.csv"
    csv_file.write_text("\n".join([header, *rows]) + "\n")
    out = tmp_path / "file"
    run_eval(
        _cfg(rafdb_root, out, limit=3, detector=f"openface:{csv_file}"),
        generator=OracleGenerator(ds),
    )
    recs = _records(out)
    assert [sorted(a["au"] for a in r["activated"]) for r in recs] == [[12], [4, 12], [12]]
    # OpenFace mapping: 0.5 * presence + 0.5 * sigmoid((r - 1) / 0.3)
    assert recs[0]["au_probs"]["12"] == pytest.approx(0.5 + 0.5 / (1 + np.exp(-2 / 0.3)), abs=1e-4)
    # a folder of per-image CSVs (FaceLandmarkImg -out_dir); a missing CSV means no AUs
    folder = tmp_path / "of"
    folder.mkdir()
    stem = recs[1]["path"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
    (folder / f"{stem}.csv").write_text(header + "\n1, 0, 0.0, 0.9, 1, 3.0, 0.0, 1, 0\n")
    out2 = tmp_path / "folder"
    run_eval(
        _cfg(rafdb_root, out2, limit=3, detector=f"openface:{folder}"),
        generator=OracleGenerator(ds),
    )
    assert [[a["au"] for a in r["activated"]] for r in _records(out2)] == [[], [4], []]
    with pytest.raises(EvalInputError, match="not found"):
        run_eval(
            _cfg(rafdb_root, tmp_path / "x", detector="openface:/nope.csv"),
            generator=OracleGenerator(ds),
        )
    with pytest.raises(EvalInputError, match="unknown detector"):
        run_eval(_cfg(rafdb_root, tmp_path / "y", detector="dlib"), generator=OracleGenerator(ds))


class _FixedText:
    """A scripted engine answering the same text for every image."""

    def __init__(self, text: str) -> None:
        from tag_model.backbones import get_adapter

        self.adapter, self.family, self.name, self.text = (
            get_adapter("qwen2_vl"),
            "qwen2_vl",
            "fixed",
            text,
        )

    def generate(self, images, messages):
        from tag_eval._generate import Generation

        return [Generation(self.text, 5, 5, 0.01, len(images)) for im in images if messages(im)]


def test_folder_dataset_real_face_uses_dlib_landmarks(tmp_path):
    """A real photo (skimage's astronaut) with no landmarks column goes through dlib."""
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image

    root = tmp_path / "faces"
    (root / "happy").mkdir(parents=True)
    Image.fromarray(skdata.astronaut()).save(root / "happy" / "astronaut.png")
    text = (
        "Global analysis: smile\nVerification loop:\n"
        "Inspect mouth → corners up → AU12 <bbox>[0,0,1000,1000]</bbox>\n"
        "Final conclusion: Combined AU12 indicate happiness.\n<answer> happy </answer>"
    )
    out = tmp_path / "r"
    m = run_eval(_cfg(root, out, dataset="folder", split=""), generator=_FixedText(text))
    (rec,) = _records(out)
    assert rec["landmarks_source"] == "dlib" and len(rec["landmarks"]) == 68
    assert rec["image_size"] == [512, 512]
    assert rec["pred_pairs"] == [{"au": 12, "box": [0.0, 0.0, 512.0, 512.0]}]
    assert rec["correct"] and m["classification"]["accuracy"] == 1.0
    # the whole-image box is far larger than the lip-corner region: a region miss (b)
    assert m["faithfulness"]["counts"]["region_miss"] == 1
    assert m["label_space"]["name"] == "canonical"
    # the same folder read in RAF-DB's label space
    _, space = load_eval_dataset("folder", root, "", label_space="rafdb")
    assert space.name == "rafdb" and space.names[0] == "surprise"
    with pytest.raises(EvalInputError, match="unknown --label_space"):
        load_eval_dataset("folder", root, "", label_space="no-such-space")


def test_label_space_subsets_every_dataset(tmp_path):
    """--label_space works for RAF-DB too: rows outside it are dropped and counted."""
    from tag_model.synth import write_rafdb_layout

    root = tmp_path / "raf"
    write_rafdb_layout(root, 35, size=64, seed=3, test_fraction=0.4)
    full, full_space = load_eval_dataset("rafdb", root, "test")
    assert full_space.name == "rafdb" and len(set(full["label"])) == 7
    ds, space, report = load_eval_dataset(
        "rafdb", root, "test", label_space="happiness, sadness", return_report=True
    )
    assert space.names == ("happiness", "sadness")
    assert set(ds["label"]) == {"happiness", "sadness"}
    assert ds["label_id"] == [space.names.index(x) for x in ds["label"]]
    dropped = sum(v for k, v in report.dropped.items() if k.startswith("not_in_label_space:"))
    assert len(ds) + dropped == len(full) and dropped > 0
