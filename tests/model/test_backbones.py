"""tag_model.backbones: families, coordinate conventions, prompts, freezing, tiny VLMs.

These tests cover the Qwen-VL families; the four tiling families (InternVL, LLaVA-OneVision,
Gemma 3, SmolVLM) are covered in ``test_backbones_families.py``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tag_model.backbones import (
    FAMILIES,
    QWEN_FAMILIES,
    BackboneAdapter,
    BackboneNotFoundError,
    LoraSpec,
    UnknownFamilyError,
    build_messages,
    build_prompt_text,
    build_tiny_tokenizer,
    detect_family,
    freeze_for_training,
    generate_completions,
    get_adapter,
    load_backbone,
    make_tiny_vlm,
    param_report,
    part_of,
    resolve_family,
)

LABELS = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")
RELATIVE = ("qwen2_vl", "qwen3_vl")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny() -> dict[str, tuple]:
    """One tiny model + processor per family, built once for the module."""
    return {fam: make_tiny_vlm(fam, seed=0) for fam in QWEN_FAMILIES}


@pytest.fixture(scope="module")
def face() -> Image.Image:
    from skimage.data import astronaut

    return Image.fromarray(astronaut()).crop((140, 20, 260, 160)).resize((112, 112))


def _grid_tokens(processor, image: Image.Image) -> tuple[int, int, int]:
    """(grid_h, grid_w, visual tokens) the processor gives ``image``."""
    out = processor.image_processor(images=[image], return_tensors="pt")
    _, gh, gw = (int(v) for v in out["image_grid_thw"][0])
    m = processor.image_processor.merge_size
    return gh, gw, gh * gw // (m * m)


# --------------------------------------------------------------------------- families
def test_families_and_aliases() -> None:
    assert QWEN_FAMILIES == ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
    assert (*QWEN_FAMILIES, "internvl", "llava_onevision", "gemma3", "smolvlm") == FAMILIES
    assert resolve_family("Qwen2.5-VL") == "qwen2_5_vl"
    assert resolve_family("qwen2-vl") == "qwen2_vl"
    assert resolve_family("Qwen3VL") == "qwen3_vl"
    assert get_adapter("qwen2_5_vl").coord_space == "absolute_resized"
    assert {get_adapter(f).coord_space for f in RELATIVE} == {"relative_1000"}


@pytest.mark.parametrize("bad", ["llava", "qwen2_audio", "", "Qwen4-VL"])
def test_unknown_family_refused_with_list(bad: str) -> None:
    for call in (get_adapter, resolve_family, make_tiny_vlm):
        with pytest.raises(UnknownFamilyError) as info:
            call(bad)
        msg = str(info.value)
        assert repr(bad) in msg
        for fam in QWEN_FAMILIES:
            assert fam in msg


def test_unknown_model_type_in_checkpoint_refused(tmp_path: Path) -> None:
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    with pytest.raises(UnknownFamilyError) as info:
        load_backbone(tmp_path)
    assert "'llama'" in str(info.value)
    assert all(f in str(info.value) for f in QWEN_FAMILIES)
    with pytest.raises(UnknownFamilyError):
        detect_family({"model_type": "llava"})


# --------------------------------------------------------------------------- coordinates
def test_known_values() -> None:
    rel = get_adapter("qwen2_vl")
    np.testing.assert_allclose(
        rel.to_pixels([500, 250, 1000, 1000], (640, 480)), [320, 120, 640, 480], rtol=1e-6
    )
    np.testing.assert_allclose(
        rel.from_pixels([320, 120, 640, 480], (640, 480)), [500, 250, 1000, 1000], rtol=1e-6
    )
    ab = get_adapter("qwen2_5_vl")
    # transformers' smart_resize(480, 640, factor=28): 476 x 644 (h x w)
    assert ab.model_input_size((640, 480)) == (644, 476)
    np.testing.assert_allclose(
        ab.to_pixels([0, 0, 644, 476], (640, 480)), [0, 0, 640, 480], rtol=1e-6
    )
    # a tight pixel budget shrinks the model input: coordinates scale up to image pixels
    small = get_adapter("qwen2_5_vl", max_pixels=224 * 224)
    w2, h2 = small.model_input_size((1000, 1000))
    assert (w2, h2) == (224, 224)
    np.testing.assert_allclose(
        small.to_pixels([112, 0, 224, 224], (1000, 1000)), [500, 0, 1000, 1000]
    )


@pytest.mark.parametrize("family", QWEN_FAMILIES)
@pytest.mark.parametrize(
    "size", [(112, 112), (80, 120), (37, 301), (640, 480), (1920, 1080), (3000, 200)]
)
def test_model_input_size_matches_processor(tiny, family: str, size: tuple[int, int]) -> None:
    """The adapter's resized size equals what the family's processor actually produces."""
    _, processor = tiny[family]
    ad = get_adapter(family, processor=processor)
    img = Image.new("RGB", size, (128, 64, 32))
    gh, gw, _ = _grid_tokens(processor, img)
    patch = processor.image_processor.patch_size
    assert ad.model_input_size(size) == (gw * patch, gh * patch)


_sizes = st.tuples(st.integers(16, 2000), st.integers(16, 2000)).filter(
    lambda s: max(s) / min(s) <= 50
)


@settings(max_examples=60, deadline=None)
@given(
    family=st.sampled_from(QWEN_FAMILIES),
    size=_sizes,
    frac=st.lists(st.floats(0, 1), min_size=4, max_size=4),
)
def test_round_trip_within_one_pixel(family: str, size: tuple[int, int], frac: list[float]) -> None:
    ad = get_adapter(family)
    w, h = size
    xs = sorted([frac[0] * w, frac[2] * w])
    ys = sorted([frac[1] * h, frac[3] * h])
    px = np.array([xs[0], ys[0], xs[1], ys[1]], dtype=np.float32)
    model_space = ad.from_pixels(px, size)
    np.testing.assert_allclose(ad.to_pixels(model_space, size), px, atol=1e-2)
    # as a model writes them: integers in its own space
    ints = ad.from_pixels(px, size, round_to_int=True)
    assert np.all(ints == np.round(ints))
    back = ad.to_pixels(ints, size)
    assert np.max(np.abs(back - px)) <= 1.0
    if ad.coord_space == "relative_1000":
        assert np.all((ints >= 0) & (ints <= 1000))
    else:
        mw, mh = ad.model_input_size(size)
        assert np.all(ints[[0, 2]] <= mw) and np.all(ints[[1, 3]] <= mh)


@settings(max_examples=30, deadline=None)
@given(
    family=st.sampled_from(QWEN_FAMILIES),
    sizes=st.lists(_sizes, min_size=1, max_size=5),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_batched_matches_per_row(family: str, sizes, k: int, seed: int) -> None:
    ad = get_adapter(family)
    rng = np.random.default_rng(seed)
    boxes = rng.uniform(0, 1000, size=(len(sizes), k, 4)).astype(np.float32)
    size_arr = np.array(sizes)
    batched = ad.to_pixels(boxes, size_arr)
    loop = np.stack([ad.to_pixels(boxes[i], sizes[i]) for i in range(len(sizes))])
    np.testing.assert_allclose(batched, loop, rtol=1e-6)
    t = ad.to_pixels(torch.from_numpy(boxes), torch.tensor(size_arr))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), batched, rtol=1e-6)
    back = ad.from_pixels(batched, size_arr)
    np.testing.assert_allclose(back, boxes, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_garbage_numbers_never_raise(family: str) -> None:
    ad = get_adapter(family)
    bad = np.array(
        [[np.nan, 0, 10, 10], [np.inf, -np.inf, 5, 5], [1e38, -1e38, 3e38, 0], [50, 40, 10, 5]],
        dtype=np.float32,
    )
    out = ad.to_pixels(bad, (640, 480))
    assert np.isnan(out[0, 0]) and np.isinf(out[1, 0]) and np.isinf(out[1, 1])
    assert np.array_equal(np.isfinite(out[:2]), np.isfinite(bad[:2]))
    assert out[3, 0] > out[3, 2]  # inverted boxes stay inverted: no silent repair
    back = ad.from_pixels(torch.tensor(bad, dtype=torch.bfloat16), (640, 480), round_to_int=True)
    assert back.dtype == torch.float32 and torch.isnan(back[0, 0])
    assert ad.to_pixels([[1, 2, 3, 4]], (10, 10)).dtype == np.float32
    assert ad.to_pixels(np.zeros((0, 4)), (10, 10)).shape == (0, 4)


def test_bad_image_size_and_shapes_are_clear_errors() -> None:
    ad = get_adapter("qwen2_5_vl")
    with pytest.raises(ValueError, match="image_size"):
        ad.to_pixels([0, 0, 1, 1], (0, 10))
    with pytest.raises(ValueError, match="image_size"):
        ad.to_pixels([0, 0, 1, 1], (np.nan, 10))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        ad.to_pixels([0, 0, 1], (10, 10))
    with pytest.raises(ValueError, match="3 rows"):
        ad.to_pixels(np.zeros((2, 5, 4)), np.full((3, 2), 100))
    with pytest.raises(ValueError, match="aspect ratio"):
        ad.model_input_size((10_000, 20))


def test_adapter_follows_processor(tiny) -> None:
    _, processor = tiny["qwen2_5_vl"]
    ad = get_adapter("qwen2_5_vl", processor=processor)
    ip = processor.image_processor
    assert (ad.min_pixels, ad.max_pixels) == (ip.size["shortest_edge"], ip.size["longest_edge"])
    assert ad.factor == ip.patch_size * ip.merge_size
    assert get_adapter("qwen2_5_vl").max_pixels != ad.max_pixels


# --------------------------------------------------------------------------- prompts
@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_grounded_messages(family: str, face: Image.Image) -> None:
    msgs = build_messages(face, LABELS, family=family)
    assert [m["role"] for m in msgs] == ["user"]
    image_part, text_part = msgs[0]["content"]
    assert image_part == {"type": "image", "image": face}
    text = text_part["text"]
    for needle in (
        "Global analysis:",
        "Verification loop:",
        "Inspect <region> →",
        "<bbox>[x1,y1,x2,y2]</bbox>",
        "Final conclusion:",
        "<answer> label </answer>",
        *LABELS,
    ):
        assert needle in text, needle
    if family in RELATIVE:
        assert "0 to 1000" in text and "absolute pixel" not in text
    else:
        w, h = get_adapter(family).model_input_size(face.size)
        assert "absolute pixel" in text and f"{w}x{h} pixels" in text


def test_compact_style_is_short_and_names_the_labels(tiny, face: Image.Image) -> None:
    from tag_model.backbones import PROMPT_STYLES

    assert PROMPT_STYLES == ("full", "compact")
    full = build_messages(face, LABELS)[0]["content"][1]["text"]
    compact = build_messages(face, LABELS, family=get_adapter("qwen2_vl"), style="compact")
    text = compact[0]["content"][1]["text"]
    assert all(n in text for n in LABELS) and "\n" not in text
    _, processor = tiny["qwen2_vl"]
    n_full, n_compact = (len(processor.tokenizer(t)["input_ids"]) for t in (full, text))
    assert n_compact * 4 < n_full, (n_compact, n_full)
    with pytest.raises(ValueError, match="unknown prompt style 'terse'"):
        build_messages(face, LABELS, style="terse")


def test_zero_shot_and_system_and_label_spaces() -> None:
    from tag_model.au import RAFDB

    zs = build_messages(None, RAFDB, grounded=False, system="Be brief.")
    assert zs[0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    assert zs[1]["content"][0] == {"type": "image"}
    text = zs[1]["content"][1]["text"]
    assert "<answer> label </answer>" in text and "Verification loop" not in text
    assert all(n in text for n in RAFDB.names)
    by_name = build_messages(None, "rafdb")[0]["content"][1]["text"]
    assert all(n in by_name for n in RAFDB.names)
    assert isinstance(build_messages(None, LABELS, family=get_adapter("qwen2_5_vl")), list)
    with pytest.raises(ValueError):
        build_messages(None, [])


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_chat_template_with_image(tiny, family: str, face: Image.Image) -> None:
    _, processor = tiny[family]
    text = build_prompt_text(processor, build_messages(face, LABELS, family=family))
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 1
    assert text.startswith("<|im_start|>")
    assert text.endswith("<|im_start|>assistant\n")
    assert ("You are a helpful assistant." in text) == (family != "qwen3_vl")
    no_gen = build_prompt_text(processor, build_messages(face, LABELS), add_generation_prompt=False)
    assert not no_gen.endswith("<|im_start|>assistant\n")
    batch = processor(text=[text], images=[face], return_tensors="pt")
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    n_img = int((batch["input_ids"] == image_id).sum())
    assert n_img == _grid_tokens(processor, face)[2] == 16


# --------------------------------------------------------------------------- tiny VLM
@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_tiny_vlm_shape(tiny, family: str) -> None:
    model, processor = tiny[family]
    n = sum(p.numel() for p in model.parameters())
    assert 1_500_000 < n < 3_000_000, n
    assert model.config.model_type == family
    assert model.config.text_config.hidden_size == 192
    tok = processor.tokenizer
    for special in (
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|image_pad|>",
        "<|endoftext|>",
    ):
        ids = tok(special, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] == tok.convert_tokens_to_ids(special)
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert tok.eos_token == "<|im_end|>"


def test_tiny_tokenizer_is_compact_and_lossless() -> None:
    tok = build_tiny_tokenizer()
    trace = (
        "Global analysis: The face shows a clear smile.\nVerification loop:\n"
        "Inspect cheeks and lower eyelids → cheeks raised → AU6 <bbox>[156,208,285,314]</bbox>\n"
        "Inspect lip corners → pulled up → AU12 <bbox>[300,610,700,820]</bbox>\n"
        "Final conclusion: Combined AU6 + AU12 indicate a dominant emotion of happiness.\n"
        "<answer> happiness </answer>"
    )
    ids = tok(trace, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == trace
    assert len(ids) < 0.45 * len(trace), (len(ids), len(trace))
    assert len(tok(" happiness", add_special_tokens=False)["input_ids"]) == 1


def test_tiny_vlm_is_seeded() -> None:
    a, _ = make_tiny_vlm("qwen2_vl", seed=1)
    b, _ = make_tiny_vlm("qwen2_vl", seed=1)
    c, _ = make_tiny_vlm("qwen2_vl", seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_tiny_vlm_generates_and_output_parses(tiny, family: str, face: Image.Image) -> None:
    parse_trace = _parse_trace()
    model, processor = tiny[family]
    images = [face, face.resize((96, 140))]
    outs = generate_completions(model, processor, images, LABELS, max_new_tokens=8)
    assert len(outs) == 2 and all(isinstance(o, str) for o in outs)
    for text in outs:
        parsed = parse_trace(text, labels=LABELS)  # garbage in, structured result out
        assert parsed.format_ok is False
        assert parsed.errors
    # same prompt, greedy: the batch rows equal the single-image runs (padding is correct)
    single = generate_completions(model, processor, images[:1], LABELS, max_new_tokens=8)
    assert single[0] == outs[0]


def test_generate_completions_asks_given_chats(tiny, face: Image.Image) -> None:
    """``messages=`` replaces TAG's prompt (one chat per image); a count mismatch is refused."""
    model, processor = tiny["qwen2_vl"]
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where?"}]}]
    asked = generate_completions(model, processor, [face], None, messages=[chat], max_new_tokens=6)
    tag = generate_completions(model, processor, [face], LABELS, max_new_tokens=6)
    inputs = processor(
        text=[build_prompt_text(processor, chat)], images=[[face]], return_tensors="pt"
    )
    with torch.inference_mode():
        ids = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert asked == processor.batch_decode(
        ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )
    assert len(tag) == 1
    with pytest.raises(ValueError, match="2 chats for 1 images"):
        generate_completions(model, processor, [face], None, messages=[chat, chat])


def _parse_trace():
    """``tag_model.grounding.parse_trace`` (written in parallel; skip cleanly if absent)."""
    grounding = pytest.importorskip("tag_model.grounding")
    return grounding.parse_trace


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_boxes_written_in_model_space_parse_back_to_pixels(family: str) -> None:
    """A trace written with adapter.from_pixels parses and converts back within one pixel."""
    parse_trace = _parse_trace()
    ad = get_adapter(family)
    size = (731, 517)
    px = np.array([[100.4, 80.2, 260.9, 190.0], [300.0, 350.5, 520.2, 480.8]], dtype=np.float32)
    ms = ad.from_pixels(px, size, round_to_int=True).astype(int)
    lines = [
        f"Inspect region {i} → raised → AU{au} <bbox>[{b[0]},{b[1]},{b[2]},{b[3]}]</bbox>"
        for i, (au, b) in enumerate(zip((6, 12), ms))
    ]
    trace = (
        "Global analysis: a smile.\nVerification loop:\n" + "\n".join(lines) + "\n"
        "Final conclusion: AU6 + AU12 indicate happiness.\n<answer> happiness </answer>"
    )
    parsed = parse_trace(trace, labels=LABELS)
    assert parsed.format_ok, parsed.errors
    boxes = np.array([s.box for s in parsed.steps], dtype=np.float32)
    assert np.max(np.abs(ad.to_pixels(boxes, size) - px)) <= 1.0


# --------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_auto_classes_load_tiny_back(tiny, family: str, face: Image.Image, tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = tiny[family]
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    m2 = AutoModelForImageTextToText.from_pretrained(tmp_path)
    p2 = AutoProcessor.from_pretrained(tmp_path)
    assert type(m2) is type(model) and type(p2) is type(processor)
    prompt = build_prompt_text(processor, build_messages(face, LABELS, family=family))
    assert build_prompt_text(p2, build_messages(face, LABELS, family=family)) == prompt
    a = processor(text=[prompt], images=[face], return_tensors="pt")
    b = p2(text=[prompt], images=[face], return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["image_grid_thw"], b["image_grid_thw"])
    torch.testing.assert_close(a["pixel_values"], b["pixel_values"], atol=2e-2, rtol=0)
    with torch.no_grad():
        la = model(**a).logits
        lb = m2(**a).logits
    assert torch.equal(la, lb)
    # the same folder through TAG's loader: family detected, adapter follows the processor
    m3, _p3, ad = load_backbone(tmp_path, dtype=torch.float32)
    assert isinstance(ad, BackboneAdapter) and ad.family == family
    assert ad.max_pixels == processor.image_processor.size["longest_edge"]
    with torch.no_grad():
        assert torch.equal(m3(**a).logits, la)
    with pytest.raises(ValueError, match="requested"):
        load_backbone(tmp_path, family=next(f for f in QWEN_FAMILIES if f != family))


def test_make_tiny_vlm_save_dir(tmp_path: Path) -> None:
    make_tiny_vlm("qwen2_5_vl", save_dir=tmp_path / "tiny")
    files = {p.name for p in (tmp_path / "tiny").iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= files
    cfg = json.loads((tmp_path / "tiny" / "config.json").read_text())
    assert cfg["model_type"] == "qwen2_5_vl"


# --------------------------------------------------------------------------- missing weights
def test_missing_local_folder_says_how_to_download(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "Qwen2.5-VL-3B-Instruct"
    with pytest.raises(BackboneNotFoundError) as info:
        load_backbone(missing, family="qwen2_5_vl")
    msg = str(info.value)
    assert str(missing) in msg
    assert "huggingface-cli download Qwen/Qwen2.5-VL-3B-Instruct --local-dir" in msg
    assert "load_backbone(" in msg


def test_missing_hub_id_offline_says_how_to_download(monkeypatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    repo = "tag-tests/definitely-not-a-real-vlm"
    t0 = time.perf_counter()
    with pytest.raises(BackboneNotFoundError) as info:
        load_backbone(repo)
    assert time.perf_counter() - t0 < 30  # fails fast, no network wait
    msg = str(info.value)
    assert f"download {repo} --local-dir" in msg
    assert "HF_HUB_OFFLINE=1" in msg


# --------------------------------------------------------------------------- freezing
@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_freeze_full(family: str) -> None:
    model, _ = make_tiny_vlm(family)
    report = freeze_for_training(model)
    names = dict(model.named_parameters())
    vision = [n for n in names if part_of(n) == "vision"]
    merger = [n for n in names if part_of(n) == "merger"]
    lm = [n for n in names if part_of(n) == "language_model"]
    assert vision and merger and lm
    assert not any(names[n].requires_grad for n in vision)
    assert all(names[n].requires_grad for n in merger + lm)
    assert report.total == sum(p.numel() for p in model.parameters())
    assert report.by_part["vision"].trainable == 0
    assert report.by_part["vision"].total == sum(names[n].numel() for n in vision)
    assert report.trainable == report.total - report.by_part["vision"].total
    assert report.by_part["merger"].trainable == report.by_part["merger"].total > 0
    assert report.model is model
    assert "vision" in str(report) and "trainable" in str(report)
    # the policy can also freeze the projector
    r2 = freeze_for_training(model, train_merger=False)
    assert r2.by_part["merger"].trainable == 0 and r2.trainable < report.trainable


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_freeze_with_lora(family: str, face: Image.Image) -> None:
    from peft import PeftModel

    model, processor = make_tiny_vlm(family)
    full = param_report(model)
    report = freeze_for_training(model, lora=LoraSpec(r=4, alpha=8))
    peft_model = report.model
    assert isinstance(peft_model, PeftModel)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    lora = [n for n in trainable if "lora_" in n]
    assert lora and all(part_of(n) == "language_model" for n in lora)
    assert all("lora_" in n or part_of(n) == "merger" for n in trainable)
    assert any(part_of(n) == "merger" for n in trainable)
    assert report.by_part["vision"].trainable == 0
    assert 0 < report.trainable < full.total // 3
    # one training step reaches the LoRA weights and the projector, not the vision tower
    peft_model.train()
    prompt = build_prompt_text(processor, build_messages(face, LABELS, family=family))
    batch = processor(
        text=[prompt + "<answer> happiness </answer>"], images=[face], return_tensors="pt"
    )
    out = peft_model(**batch, labels=batch["input_ids"])
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = {n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" not in n)
    assert all(p.grad is None for n, p in peft_model.named_parameters() if part_of(n) == "vision")


def test_lora_config_given_directly_keeps_merger_trainable() -> None:
    from peft import LoraConfig

    model, _ = make_tiny_vlm("qwen2_5_vl")
    cfg = LoraConfig(r=2, target_modules=r".*language_model.*\.(q_proj|v_proj)")
    report = freeze_for_training(model, lora=cfg)
    assert report.by_part["merger"].trainable > 0
    assert report.by_part["vision"].trainable == 0
    assert cfg.modules_to_save is None  # the caller's config is left untouched
    with pytest.raises(TypeError, match="LoraSpec"):
        freeze_for_training(make_tiny_vlm("qwen2_vl")[0], lora={"r": 4})


# --------------------------------------------------------------------------- no torchvision
def test_processor_built_without_torchvision(
    monkeypatch, face: Image.Image, tmp_path: Path
) -> None:
    from tag_model.backbones import _tiny
    from transformers import AutoProcessor

    monkeypatch.setattr(_tiny, "_torchvision_available", lambda: False)
    model, processor = make_tiny_vlm("qwen3_vl", save_dir=tmp_path)
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert type(processor.video_processor).__name__ == "ImageOnlyVideoProcessor"
    prompt = build_prompt_text(processor, build_messages(face, LABELS))
    batch = processor(text=[prompt], images=[face], return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()
    with pytest.raises(ImportError, match="torchvision"):
        processor.video_processor.preprocess([np.zeros((2, 32, 32, 3), np.uint8)])
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["video_processor"]["video_processor_type"] == "Qwen3VLVideoProcessor"
    assert saved["processor_class"] == "Qwen3VLProcessor"
    # where torchvision exists (here), the saved folder loads with the real classes
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(reloaded.video_processor).__name__ == "Qwen3VLVideoProcessor"


@pytest.mark.slow
def test_really_without_torchvision(tmp_path: Path) -> None:
    """A fresh interpreter where ``import torchvision`` fails: build, run, save, load back."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torchvision"] = None
        import numpy as np, torch
        from PIL import Image
        from transformers.utils import is_torchvision_available
        from tag_model.backbones import QWEN_FAMILIES, make_tiny_vlm, load_backbone, build_messages, build_prompt_text
        assert not is_torchvision_available()
        img = Image.fromarray(np.full((112, 112, 3), 90, np.uint8))
        for fam in QWEN_FAMILIES:
            m, p = make_tiny_vlm(fam, save_dir={str(tmp_path)!r} + "/" + fam)
            x = p(text=[build_prompt_text(p, build_messages(img, ["happiness"]))], images=[img], return_tensors="pt")
            m2, p2, ad = load_backbone({str(tmp_path)!r} + "/" + fam)
            x2 = p2(text=[build_prompt_text(p2, build_messages(img, ["happiness"]))], images=[img], return_tensors="pt")
            with torch.no_grad():
                assert torch.equal(m(**x).logits, m2(**x2).logits), fam
        print("OK")
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-3000:]


def test_math_sanity_of_relative_scale() -> None:
    # guards the 0-1000 convention itself: 1000 units span the full side
    ad = get_adapter("qwen3_vl")
    w, h = 333, 777
    full = ad.to_pixels([0, 0, 1000, 1000], (w, h))
    assert math.isclose(float(full[2]), w, rel_tol=1e-6) and math.isclose(
        float(full[3]), h, rel_tol=1e-6
    )


@pytest.mark.gpu
@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_tiny_vlm_on_cuda_bf16(family: str, face: Image.Image) -> None:
    """bf16 on the GPU: generation runs, and box conversion keeps CUDA tensors on device."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model, processor = make_tiny_vlm(family, dtype=torch.bfloat16)
    model = model.to("cuda")
    outs = generate_completions(model, processor, [face, face], LABELS, max_new_tokens=6)
    assert len(outs) == 2
    parse_trace = _parse_trace()
    assert all(parse_trace(o).format_ok is False for o in outs)
    boxes = torch.tensor([[[10.0, 20.0, 300.0, 400.0]]], device="cuda", dtype=torch.bfloat16)
    px = get_adapter(family).to_pixels(boxes, torch.tensor([[640, 480]], device="cuda"))
    assert px.device.type == "cuda" and px.dtype == torch.float32
    back = get_adapter(family).from_pixels(px, (640, 480))
    torch.testing.assert_close(back, boxes.float(), atol=1.0, rtol=0)


# --------------------------------------------------------------------------- TAG settings
def test_tag_settings_round_trip_and_validation(tmp_path: Path) -> None:
    from tag_model.backbones import (
        PROMPT_STYLES,
        SETTINGS_FILE,
        TagSettings,
        load_tag_settings,
        save_tag_settings,
    )

    s = TagSettings.for_family(
        "Qwen2.5-VL", LABELS, label_space="rafdb", prompt_style="compact", detector="geometric"
    )
    assert s.family == "qwen2_5_vl" and s.coord_space == "absolute_resized"
    assert s.labels == LABELS and isinstance(s.labels, tuple)
    assert TagSettings.from_dict(s.to_dict()) == s
    assert load_tag_settings(tmp_path) is None  # no file: no settings, not an error
    path = save_tag_settings(tmp_path / "ckpt", s)
    assert path == tmp_path / "ckpt" / SETTINGS_FILE
    assert load_tag_settings(tmp_path / "ckpt") == s == load_tag_settings(path)
    assert json.loads(path.read_text())["labels"] == list(LABELS)
    assert s.replace(family="qwen3_vl").coord_space == "relative_1000"
    # the styles the settings accept are the prompt builder's
    for style in PROMPT_STYLES:
        assert s.replace(prompt_style=style).prompt_style == style
    # keys from a newer writer are ignored; a newer format version is refused
    assert TagSettings.from_dict({**s.to_dict(), "extra": 1}) == s
    with pytest.raises(ValueError, match="'version'"):
        TagSettings.from_dict({**s.to_dict(), "version": 99})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"family": "llava"}, "family"),
        ({"coord_space": "relative_1000"}, "coord_space"),  # not Qwen2.5-VL's convention
        ({"coord_space": "pixels"}, "coord_space"),
        ({"labels": []}, "labels"),
        ({"labels": "happiness"}, "labels"),
        ({"labels": ["happiness", "happiness"]}, "labels"),
        ({"prompt_style": "verbose"}, "prompt_style"),
        ({"label_space": 7}, "label_space"),
        ({"detector": ""}, "detector"),
        ({"labels": None}, "labels"),
    ],
)
def test_malformed_tag_settings_name_file_and_field(tmp_path: Path, change, field) -> None:
    from tag_model.backbones import SETTINGS_FILE, TagSettings, load_tag_settings

    data = TagSettings.for_family("qwen2_5_vl", LABELS).to_dict()
    data.update(change)
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(data))
    with pytest.raises(ValueError) as info:
        load_tag_settings(tmp_path)
    msg = str(info.value)
    assert str(tmp_path / SETTINGS_FILE) in msg and f"field {field!r}" in msg


def test_tag_settings_file_not_json_or_missing_field(tmp_path: Path) -> None:
    from tag_model.backbones import SETTINGS_FILE, load_tag_settings

    f = tmp_path / SETTINGS_FILE
    f.write_text('{"family": "qwen2_vl",')
    with pytest.raises(ValueError, match="not valid JSON") as info:
        load_tag_settings(tmp_path)
    assert str(f) in str(info.value)
    f.write_text('{"family": "qwen2_vl"}')
    with pytest.raises(ValueError, match="field 'coord_space' is missing"):
        load_tag_settings(tmp_path)
    f.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_tag_settings(tmp_path)


# --------------------------------------------------------------------------- LoRA adapters
def _adapter_with_effect(model) -> None:
    """LoRA's B matrices start at zero; give them values so the adapter changes the output."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


@pytest.fixture(scope="module")
def saved_adapter(tmp_path_factory, face: Image.Image):
    """A tiny Qwen2.5-VL base folder and a LoRA adapter folder trained on it (no processor)."""
    from tag_model.backbones import load_backbone

    root = tmp_path_factory.mktemp("lora")
    make_tiny_vlm("qwen2_5_vl", save_dir=root / "base", seed=0)
    base, processor, _ = load_backbone(root / "base", dtype=torch.float32)
    peft_model = freeze_for_training(base, lora=LoraSpec(r=4, alpha=8)).model
    _adapter_with_effect(peft_model)
    with torch.no_grad():  # the projector is saved with the adapter (modules_to_save)
        for name, p in peft_model.named_parameters():
            if "modules_to_save" in name:
                p.add_(0.01)
    peft_model.save_pretrained(root / "adapter")
    prompt = build_prompt_text(processor, build_messages(face, LABELS, family="qwen2_5_vl"))
    batch = processor(text=[prompt], images=[face], return_tensors="pt")
    peft_model.eval()
    with torch.no_grad():
        want = peft_model(**batch).logits
    return {"root": root, "batch": batch, "logits": want, "processor": processor}


def test_checkpoint_kind(saved_adapter, tmp_path: Path) -> None:
    from tag_model.backbones import checkpoint_kind

    root = saved_adapter["root"]
    assert checkpoint_kind(root / "base") == "full"
    assert checkpoint_kind(root / "adapter") == "adapter"
    assert checkpoint_kind(str(root / "adapter")) == "adapter"
    assert checkpoint_kind(tmp_path) is None  # empty folder
    (tmp_path / "config.json").write_text("{}")
    assert checkpoint_kind(tmp_path) is None  # a config without weights
    assert checkpoint_kind(tmp_path / "missing") is None
    assert checkpoint_kind("Qwen/Qwen2.5-VL-3B-Instruct") is None  # a hub id


def test_load_backbone_applies_an_adapter(saved_adapter) -> None:
    from peft import PeftModel
    from tag_model.backbones import load_backbone

    root, batch = saved_adapter["root"], saved_adapter["batch"]
    model, processor, ad = load_backbone(root / "adapter", dtype=torch.float32)
    assert isinstance(model, PeftModel) and ad.family == "qwen2_5_vl"
    assert not any(p.requires_grad for p in model.parameters())  # inference by default
    with torch.no_grad():
        base_logits = load_backbone(root / "base", dtype=torch.float32)[0](**batch).logits
        got = model(**batch).logits
    torch.testing.assert_close(got, saved_adapter["logits"], atol=1e-5, rtol=1e-5)
    assert (got - base_logits).abs().max() > 1e-3  # the adapter does change the output
    # no processor in the adapter folder: the base's
    assert (
        processor.image_processor.to_dict() == saved_adapter["processor"].image_processor.to_dict()
    )
    merged, _, _ = load_backbone(root / "adapter", dtype=torch.float32, merge=True)
    assert not isinstance(merged, PeftModel)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, got, atol=1e-4, rtol=1e-4)
    trainable, _, _ = load_backbone(root / "adapter", dtype=torch.float32, adapter_trainable=True)
    names = [n for n, p in trainable.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or "modules_to_save" in n for n in names)


def test_adapter_processor_and_base_resolution(saved_adapter, tmp_path: Path) -> None:
    import shutil

    from tag_model.backbones import load_backbone

    root = saved_adapter["root"]
    ad_dir = tmp_path / "runs" / "adapter"
    shutil.copytree(root / "adapter", ad_dir)
    shutil.copytree(root / "base", tmp_path / "runs" / "base")
    # a processor saved with the adapter wins over the base's
    small = load_backbone(root / "base", processor_kwargs={"max_pixels": 56 * 56})[1]
    small.save_pretrained(ad_dir)
    _, processor, ad = load_backbone(ad_dir, dtype=torch.float32)
    assert processor.image_processor.size["longest_edge"] == 56 * 56 == ad.max_pixels
    # a relative base path is found next to the adapter folder
    cfg = json.loads((ad_dir / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "../base"
    (ad_dir / "adapter_config.json").write_text(json.dumps(cfg))
    model, _, _ = load_backbone(ad_dir, dtype=torch.float32)
    assert model.peft_config["default"].r == 4
    # no base named at all: a clear error, and base_model= overrides
    cfg["base_model_name_or_path"] = None
    (ad_dir / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="base_model_name_or_path"):
        load_backbone(ad_dir)
    model, _, _ = load_backbone(ad_dir, dtype=torch.float32, base_model=root / "base")
    with pytest.raises(ValueError, match="requested"):
        load_backbone(ad_dir, family="qwen2_vl", base_model=root / "base")


def test_processor_pixel_budget_through_load_backbone(saved_adapter, face: Image.Image) -> None:
    base = saved_adapter["root"] / "base"
    _, default, _ = load_backbone(base)
    _, small, ad = load_backbone(
        base, processor_kwargs={"min_pixels": 28 * 28, "max_pixels": 56 * 56}
    )
    assert small.image_processor.size["longest_edge"] == 56 * 56 == ad.max_pixels
    assert _grid_tokens(small, face)[2] < _grid_tokens(default, face)[2]
