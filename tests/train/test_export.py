"""``tag-train export``: a trace dataset as verl / EasyR1 / OpenRLHF data, scored the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tag_train.cli import main
from tag_train.export import placeholder_messages
from tag_train.integrations import GroundTruth, easyr1, openrlhf, verl
from tag_train.rewards import get_tag_rewards

#: the synth traces' label set (their tag_settings.json)
LABELS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("traces") / "synth"
    rc = main(["traces", "--dataset", "synth", "--synth_n", "16", "--output_dir", str(out)])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def ds(traces: Path):
    from datasets import load_from_disk

    return load_from_disk(str(traces))


def _reference(ds) -> np.ndarray:
    """tag_train.rewards on the trace dataset's own columns (the GRPO path), summed 1/1/1."""
    f, a, g = get_tag_rewards("qwen2_5_vl", labels=list(LABELS))
    texts = list(ds["trace"])
    return (
        np.array(f(texts))
        + np.array(a(texts, label=ds["label"]))
        + np.array(g(texts, activated=ds["activated"], image=ds["image"]))
    )


def _export(traces: Path, out: Path, fmt: str, *extra: str) -> int:
    return main(
        ["export", "--format", fmt, "--dataset_path", str(traces), "--output_dir", str(out), *extra]
    )


def test_verl_parquet(traces, ds, tmp_path):
    import pandas as pd

    assert _export(traces, tmp_path, "verl", "--val_size", "3") == 0
    train = pd.read_parquet(tmp_path / "train.parquet")
    val = pd.read_parquet(tmp_path / "val.parquet")
    assert len(train) + len(val) == len(ds) and len(val) == 3
    cols = ["data_source", "prompt", "images", "ability", "reward_model", "extra_info"]
    assert list(train.columns) == cols
    row = train.iloc[0]
    assert row["data_source"] == "tag/fer"
    msgs = list(row["prompt"])
    assert msgs[0]["role"] == "user" and msgs[0]["content"].startswith("<image>")
    assert sum(m["content"].count("<image>") for m in msgs) == len(row["images"]) == 1
    assert row["images"][0]["bytes"][:4] == b"\x89PNG"
    assert row["reward_model"]["style"] == "rule"
    gt = GroundTruth.from_json(row["reward_model"]["ground_truth"])
    assert gt.family == "qwen2_5_vl" and gt.image_size == ds[0]["image"].size
    assert gt.label == ds[0]["label"] and len(gt.activated) == len(ds[0]["activated"])
    assert row["extra_info"]["index"] == 0 and row["extra_info"]["split"] == "train"
    # the exported rows, scored by the verl adapter, give the GRPO rewards of the traces
    both = pd.concat([train, val])
    out = verl.compute_score_batch(
        list(both["data_source"]),
        list(ds["trace"]),
        [r["ground_truth"] for r in both["reward_model"]],
        [dict(e) for e in both["extra_info"]],
    )
    np.testing.assert_allclose([o["score"] for o in out], _reference(ds), atol=1e-12)
    assert min(o["score"] for o in out) > 2.5  # template traces: well formed, right, grounded


def test_easyr1_parquet(traces, ds, tmp_path):
    from datasets import load_dataset

    assert _export(traces, tmp_path, "easyr1") == 0
    d = load_dataset("parquet", data_files=str(tmp_path / "train.parquet"), split="train")
    assert d.column_names == ["problem", "answer", "images"]
    assert d[0]["problem"].startswith("<image>") and d[0]["images"][0].size == ds[0]["image"].size
    out = easyr1.compute_score(
        [
            {"response": t, "response_length": 1, "ground_truth": g}
            for t, g in zip(ds["trace"], d["answer"])
        ]
    )
    np.testing.assert_allclose([o["overall"] for o in out], _reference(ds), atol=1e-12)


def test_openrlhf_jsonl(traces, ds, tmp_path):
    from PIL import Image

    assert _export(traces, tmp_path, "openrlhf") == 0
    lines = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert len(lines) == len(ds)
    assert set(lines[0]) == {"prompt", "images", "label", "datasource"}
    assert lines[0]["prompt"][0]["content"].startswith("<image>")
    for line, row in zip(lines[:3], ds):
        with Image.open(line["images"][0]) as im:
            assert im.size == row["image"].size
    prompt = "<|im_start|>user\n<|image_pad|>Q<|im_end|>\n<|im_start|>assistant\n"
    queries = [prompt + t + "<|im_end|>" for t in ds["trace"]]
    r = openrlhf.reward_func(queries, [prompt] * len(queries), [x["label"] for x in lines])
    np.testing.assert_allclose(r["rewards"].numpy(), _reference(ds), atol=1e-5)


def test_pixel_budget_and_family_flags(traces, tmp_path):
    import pandas as pd

    args = ("--min_pixels", "3136", "--max_pixels", "12544", "--family", "Qwen2.5-VL")
    assert _export(traces, tmp_path, "verl", *args) == 0
    gt = json.loads(
        pd.read_parquet(tmp_path / "train.parquet").iloc[0]["reward_model"]["ground_truth"]
    )
    assert (gt["min_pixels"], gt["max_pixels"], gt["family"]) == (3136, 12544, "qwen2_5_vl")


def test_errors(traces, tmp_path, capsys):
    assert _export(traces, tmp_path, "trl") == 2
    assert "--format must be one of verl, easyr1, openrlhf" in capsys.readouterr().err
    assert _export(tmp_path / "missing", tmp_path / "o", "verl") == 4
    bare = tmp_path / "bare"
    shutil.copytree(traces, bare)
    (bare / "tag_settings.json").unlink()
    assert _export(bare, tmp_path / "o", "verl") == 2
    assert "give --family" in capsys.readouterr().err
    assert _export(bare, tmp_path / "o", "verl", "--family", "qwen2_5_vl") == 0
    assert _export(traces, tmp_path / "o", "verl", "--val_size", "99") == 2


def test_placeholder_messages():
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}]
    assert placeholder_messages(parts) == [{"role": "user", "content": "<image>Q"}]
    plain = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert placeholder_messages(plain)[1] == {"role": "user", "content": "<image>Q"}
    with pytest.raises(ValueError, match="no user message"):
        placeholder_messages([{"role": "system", "content": "S"}])
