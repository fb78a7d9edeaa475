"""``tag-eval run --model student:DIR``: the distilled student scored with the VLM metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flax")


@pytest.fixture(scope="module")
def student_dir(traces_dir: Path, tmp_path_factory) -> Path:
    from tag_train.student import DistillArguments, run_distill

    out = tmp_path_factory.mktemp("student")
    run_distill(
        DistillArguments(
            output_dir=str(out),
            dataset_path=str(traces_dir),
            eval_fraction=0.25,
            batch_size=4,
            max_steps=4,
            save_steps=2,
            logging_steps=2,
            warmup_steps=1,
            widths=[8, 16, 16],
            hidden=32,
        ),
        log=lambda _m: None,
    )
    return out


def test_tag_eval_scores_the_student_like_a_vlm(student_dir, synth_root, tmp_path):
    from tag_eval.run import RunConfig, run_eval
    from tag_model.jsonl import read_jsonl
    from tag_train.student import load

    out = tmp_path / "eval"
    metrics = run_eval(
        RunConfig(
            model_name_or_path=f"student:{student_dir}",
            dataset="rafdb",
            data_root=str(synth_root),
            split="test",
            output_dir=str(out),
            n_boot=20,
            per_device_eval_batch_size=4,
        )
    )
    meta = json.loads((out / "run.json").read_text())
    # the student's tag_settings.json gives the label space it was trained with
    assert meta["label_space"]["names"] == ["happiness", "sadness", "surprise", "anger"]
    assert meta["family"] == "qwen2_vl"
    cls = metrics["classification"]
    assert 0.0 <= cls["accuracy"] <= 1.0 and set(cls["per_class"]) == set(
        meta["label_space"]["names"]
    )
    faith = metrics["faithfulness"]
    for key in ("grounding_f", "au_precision", "au_recall", "hallucination_rate"):
        assert key in faith, key
    assert metrics["parse"]["format_ok_rate"] == 1.0
    records, _ = read_jsonl(out / "samples.jsonl")
    assert len(records) == 6
    # the trace each record holds is the student's own, and its boxes the student's boxes
    pred = load(student_dir)
    from PIL import Image

    for r in records:
        image = Image.open(
            r["image_file"] if Path(r["image_file"]).is_absolute() else out / r["image_file"]
        )
        o = pred.predict([image])
        assert r["trace"] == o.traces[0]
        assert r["prediction"] == o.emotion[0]
        got = sorted((p["au"], *p["box"]) for p in r["pred_pairs"])
        want = sorted((a.au, *a.box) for a in o.activated[0])
        if not want:  # nothing activated: one inspection of the whole face, no AU named
            assert [g[0] for g in got] == [0]
            continue
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=0.06)


def test_missing_student_folder_is_a_model_error(tmp_path):
    from tag_eval._generate import check_model_ref
    from tag_eval._records import EvalModelError

    with pytest.raises(EvalModelError, match="student model folder not found"):
        check_model_ref(f"student:{tmp_path / 'nope'}")
