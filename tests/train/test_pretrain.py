"""`tag-train pretrain` and the shipped `tag-nano` base (tag_train.pretrain)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from tag_train.pretrain import PRETRAIN_PRESETS, parse_qa, qa_rows, qa_scores


@pytest.fixture(scope="module")
def adapter():
    from tag_model.backbones import get_adapter, make_tiny_vlm

    _, processor = make_tiny_vlm("qwen2_vl")
    return get_adapter("qwen2_vl", processor=processor)


@pytest.fixture(scope="module")
def rows(adapter):
    from tag_train.pretrain._qa import render_faces

    faces = render_faces(
        123,
        0,
        12,
        size=112,
        labels=("happiness", "neutral", "fear"),
        variation=1.6,
        progress=False,
    )
    return qa_rows(*faces, adapter, seed=0)


def test_qa_rows_ask_both_kinds_and_the_reference_answers_score_one(rows, adapter):
    assert set(rows["kind"]) == {"aus", "regions"}
    for kind, q, a in zip(rows["kind"], rows["prompt"], rows["trace"], strict=True):
        found, expr = parse_qa(a)
        if kind == "aus":
            assert q[0]["content"].startswith("Which Action Units")
            assert expr is not None and all(k.startswith("AU") for k in found)
        else:
            assert len(found) == 3 and expr is None
    s = qa_scores(rows["trace"], rows, adapter)
    assert s["region_iou"] > 0.95 and s["expression"] == 1.0
    assert s["au_precision"] == 1.0 and s["au_recall"] == 1.0 and s["au_mean_iou"] > 0.95


def test_qa_scores_count_missing_and_wrong_answers(rows, adapter):
    bad = ["Expression: anger.\nAU99 <bbox>[0,0,10,10]</bbox>\nAU12 <bbox>[oops]</bbox>"] * 12
    s = qa_scores(bad, rows, adapter)
    assert s["region_iou"] == 0.0 and s["au_mean_iou"] == 0.0 and s["au_precision"] == 0.0
    assert s["expression"] == 0.0  # no face of these three labels is anger


def test_parse_qa_ignores_lines_that_do_not_parse():
    found, expr = parse_qa("inner brow <bbox>[1,2,3,4]</bbox>\nnoise\nAU4 <bbox>[1,2,3]</bbox>")
    assert found == {"inner brow": [1.0, 2.0, 3.0, 4.0]} and expr is None


def test_synthfacs_variation_widens_pose_and_keeps_the_default_samples():
    from tag_model.synth import SynthFACS

    def spans(v):
        g = SynthFACS(size=112, seed=5, variation=v)
        lm = np.stack([g.sample(i, render=False).landmarks for i in range(60)])
        width = lm[:, :, 0].max(1) - lm[:, :, 0].min(1)
        return width.max() - width.min(), lm

    narrow, lm1 = spans(1.0)
    wide, _ = spans(2.0)
    assert wide > 1.2 * narrow
    ref = np.stack(
        [SynthFACS(size=112, seed=5).sample(i, render=False).landmarks for i in range(60)]
    )
    np.testing.assert_array_equal(lm1, ref)
    with pytest.raises(ValueError, match="variation"):
        SynthFACS(variation=3.0)


def test_pretrain_smoke_preset_writes_a_loadable_base(tmp_path):
    from tag_model.backbones import load_backbone
    from tag_train.pretrain import run_pretrain

    out = tmp_path / "base"
    record = run_pretrain(PRETRAIN_PRESETS["smoke"], out, progress=False)
    assert not (tmp_path / "base.work").exists()  # stage checkpoints removed at the end
    saved = json.loads((out / "pretrain.json").read_text())
    assert saved["preset"] == PRETRAIN_PRESETS["smoke"].to_dict() == record["preset"]
    assert set(saved["eval"]) >= {"region_iou", "au_mean_iou", "au_recall", "expression"}
    assert saved["command"] == "tag-train pretrain --preset smoke"
    model, _processor, adapter = load_backbone(out)
    assert adapter.family == "qwen2_vl" and model.config.model_type == "qwen2_vl"


def test_pretrain_refuses_a_work_dir_of_another_preset(tmp_path):
    from tag_train.pretrain import run_pretrain

    work = tmp_path / "w"
    work.mkdir()
    (work / "record.json").write_text(json.dumps({"preset": {"name": "nano"}}))
    with pytest.raises(ValueError, match="another preset"):
        run_pretrain(PRETRAIN_PRESETS["smoke"], tmp_path / "o", work, progress=False)


def test_shipped_tag_nano_loads_offline_and_matches_its_command(monkeypatch):
    from tag_model.backbones import (
        SHIPPED_BACKBONES,
        load_backbone,
        make_tiny_vlm,
        shipped_backbone_path,
    )

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "tag-nano" in SHIPPED_BACKBONES
    path = shipped_backbone_path("tag-nano")
    assert (path / "model.safetensors").stat().st_size <= 25 * 2**20
    record = json.loads((path / "pretrain.json").read_text())
    preset = PRETRAIN_PRESETS["nano"]
    assert record["preset"] == preset.to_dict()  # the shipped files are this command's
    assert record["command"] == "tag-train pretrain --preset nano"
    model, processor, _adapter = load_backbone("tag-nano")
    fresh, _ = make_tiny_vlm("qwen2_vl", seed=preset.seed, image_size=preset.image_size)
    shipped, built = model.config.to_dict(), fresh.config.to_dict()
    for part in ("text_config", "vision_config"):
        for k, v in built[part].items():
            if k not in ("dtype", "torch_dtype", "_name_or_path", "transformers_version"):
                assert shipped[part].get(k) == v, (part, k)
    assert processor.tokenizer.get_vocab() == make_tiny_vlm("qwen2_vl")[1].tokenizer.get_vocab()
    # and it is pretrained: its region boxes beat what a random model writes by far
    assert record["eval"]["region_iou"] > 0.5


def test_unknown_shipped_name_is_a_clear_error():
    from tag_model.backbones import shipped_backbone_path

    with pytest.raises(KeyError, match="not a shipped backbone"):
        shipped_backbone_path("tag-giant")


def test_vision_stage_resumes_from_its_checkpoint_bit_identically(tmp_path, monkeypatch):
    """An interrupted vision stage, called again with its checkpoint file, continues at the
    saved step and ends with the same tower as a run that never stopped; a checkpoint of
    other settings is refused by name."""
    import torch
    from tag_model.backbones import make_tiny_vlm
    from tag_train.pretrain._qa import render_faces
    from tag_train.pretrain._vision import VisionWarmup, vision_warmup

    labels = ("happiness", "neutral", "fear")
    im, ys, lm = render_faces(5, 0, 8, size=112, labels=labels, variation=1.6, progress=False)
    faces, held = (im, ys, np.stack(lm)), (im[:3], ys[:3])
    settings = VisionWarmup(steps=6, batch=4, seed=0)

    def run(**kw):
        model, processor = make_tiny_vlm("qwen2_vl", seed=0)
        info = vision_warmup(model, processor, faces, held, labels, settings, progress=False, **kw)
        return info, model.model.visual.state_dict()

    _, whole = run()
    ck = tmp_path / "stage1.ckpt.pt"
    real_step, calls = torch.optim.AdamW.step, []

    def stop_at_five(self, *a, **k):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", stop_at_five)
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint=ck, checkpoint_every=2)
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert ck.exists() and torch.load(ck, weights_only=False)["step"] == 4
    info, resumed = run(checkpoint=ck, checkpoint_every=2)
    assert info["resumed_from"] == 4
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    other = dataclasses.replace(settings, lr=1e-3)
    model, processor = make_tiny_vlm("qwen2_vl", seed=0)
    with pytest.raises(ValueError, match=r"stage1\.ckpt\.pt"):
        vision_warmup(model, processor, faces, held, labels, other, progress=False, checkpoint=ck)
