"""The tiling families: InternVL, LLaVA-OneVision, Gemma 3 and SmolVLM.

Coordinate conventions (round trips on non-square images across tiling settings), each
family's native box syntax through both parsers, the tile layout against the real image
processors, the tiny offline models (special tokens, chat template, save / load_backbone,
generation) and the freezing policy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tag_model.backbones import (
    FAMILIES,
    QWEN_FAMILIES,
    LoraSpec,
    build_messages,
    build_prompt_text,
    detect_family,
    family_spec,
    freeze_for_training,
    generate_completions,
    get_adapter,
    load_backbone,
    make_tiny_vlm,
    part_of,
    resolve_family,
)
from tag_model.grounding import parse_batch, parse_trace

NEW = ("internvl", "llava_onevision", "gemma3", "smolvlm")
LABELS = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")
SIZES = [(640, 480), (480, 640), (1920, 1080), (90, 160), (1999, 37), (113, 1000)]
TINY = dict(
    text_hidden=64,
    text_layers=2,
    text_heads=2,
    text_kv_heads=1,
    text_intermediate=128,
    vision_depth=1,
    vision_width=32,
    vision_heads=2,
)


# --------------------------------------------------------------------------- registry
def test_new_families_are_registered_with_sources() -> None:
    assert set(NEW) <= set(FAMILIES) and not set(NEW) & set(QWEN_FAMILIES)
    for fam in NEW:
        spec = family_spec(fam)
        assert spec.coord_space == "relative_1000"
        assert "arXiv" in spec.box_source or "docs" in spec.box_source
        assert detect_family({"model_type": fam}) == fam
    assert family_spec("internvl").native_box == "<box>[[x1, y1, x2, y2]]</box>"
    assert {family_spec(f).native_box for f in NEW[1:]} == {None}
    aliases = {
        "InternVL3": "internvl",
        "InternVL2.5": "internvl",
        "LLaVA-OneVision": "llava_onevision",
        "llava-ov": "llava_onevision",
        "Gemma 3": "gemma3",
        "gemma-3": "gemma3",
        "SmolVLM2": "smolvlm",
        "SmolVLM": "smolvlm",
    }
    for alias, fam in aliases.items():
        assert resolve_family(alias) == fam, alias


# --------------------------------------------------------------------------- coordinates
def _tiling_processors(family: str) -> list:
    """Image processors of ``family`` with different tiling settings (PIL backends)."""
    if family == "internvl":
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
            GotOcr2ImageProcessorPil as P,
        )

        return [
            P(size={"height": 448, "width": 448}, crop_to_patches=True, max_patches=12),
            P(size={"height": 448, "width": 448}, crop_to_patches=True, max_patches=4),
            P(size={"height": 56, "width": 56}, crop_to_patches=False),
        ]
    if family == "llava_onevision":
        from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
            LlavaOnevisionImageProcessorPil as P,
        )

        return [P(), P(size={"height": 28, "width": 28}, image_grid_pinpoints=[[28, 56], [56, 28]])]
    if family == "gemma3":
        from transformers.models.gemma3.image_processing_pil_gemma3 import (
            Gemma3ImageProcessorPil as P,
        )

        return [P(size={"height": 896, "width": 896}), P(size={"height": 56, "width": 56})]
    from transformers.models.smolvlm.image_processing_pil_smolvlm import (
        SmolVLMImageProcessorPil as P,
    )

    return [
        P(size={"longest_edge": 1536}, max_image_size={"longest_edge": 384}),
        P(size={"longest_edge": 112}, max_image_size={"longest_edge": 56}),
        P(do_image_splitting=False),
    ]


@pytest.mark.parametrize("family", NEW)
def test_round_trip_within_one_pixel_across_tiling(family: str) -> None:
    """pixels -> model (rounded to integers, as a model writes them) -> pixels within 1 px,
    on non-square images; the result does not depend on the tiling settings."""
    rng = np.random.default_rng(0)
    sizes = np.array(SIZES, dtype=np.float64)
    x1 = rng.uniform(0, 0.5, (len(SIZES), 8)) * sizes[:, None, 0]
    y1 = rng.uniform(0, 0.5, (len(SIZES), 8)) * sizes[:, None, 1]
    x2 = x1 + rng.uniform(0.1, 0.5, (len(SIZES), 8)) * sizes[:, None, 0]
    y2 = y1 + rng.uniform(0.1, 0.5, (len(SIZES), 8)) * sizes[:, None, 1]
    boxes = np.stack([x1, y1, x2, y2], axis=-1)  # [B, K, 4] in image pixels
    results = []
    adapters = [get_adapter(family)] + [
        get_adapter(family, processor=p) for p in _tiling_processors(family)
    ]
    assert len({a.tiling for a in adapters[1:]}) == len(adapters) - 1  # the settings differ
    for ad in adapters:
        model = ad.from_pixels(boxes, sizes, round_to_int=True)
        assert model.min() >= 0 and model.max() <= 1000
        back = ad.to_pixels(model, sizes)
        assert np.abs(back - boxes).max() <= 1.0
        for i, size in enumerate(SIZES):  # one image at a time gives the same
            np.testing.assert_allclose(ad.to_pixels(model[i], size), back[i], rtol=1e-6)
        results.append(back)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    t = torch.tensor([[250.0, 100.0, 750.0, 900.0]])
    assert get_adapter(family).to_pixels(t, (640, 480)).tolist() == [[160.0, 48.0, 480.0, 432.0]]


@pytest.mark.parametrize("family", NEW)
def test_tile_grid_matches_the_image_processor(family: str) -> None:
    """The adapter's tile count equals what the family's real image processor produces."""
    for ip in _tiling_processors(family):
        ad = get_adapter(family, processor=ip)
        for w, h in [(640, 480), (90, 160), (1000, 300), (56, 56)]:
            img = Image.new("RGB", (w, h), (120, 90, 60))
            rows, cols, n = ad.tile_grid((w, h))
            if family == "internvl":
                out = ip(images=[img], crop_to_patches=ip.crop_to_patches)
                got = int(np.asarray(out["num_patches"]).reshape(-1)[0])
            elif family == "llava_onevision":
                got = int(ip(images=[img], return_tensors="np")["pixel_values"].shape[1])
            elif family == "gemma3":
                got = int(ip(images=[img], return_tensors="np")["pixel_values"].shape[0])
            else:
                out = ip(images=[img], return_tensors="np", return_row_col_info=True)
                got = int(out["pixel_values"].shape[1])
                r, c = int(np.ravel(out["rows"])[0]), int(np.ravel(out["cols"])[0])
                assert (max(r, 1), max(c, 1)) == (rows, cols)
            assert n == got, (family, (w, h), ad.tiling_settings, (rows, cols, n), got)
    # dynamic tiling really tiles: a wide image gets more columns than rows
    if family in ("internvl", "llava_onevision", "smolvlm"):
        rows, cols, n = get_adapter(family).tile_grid((1920, 640))
        assert cols > rows and n > 1
        grid = get_adapter(family).tile_grid(np.array([[1920, 640], [640, 1920]]))
        assert grid.shape == (2, 3) and grid[0, 1] > grid[0, 0] and grid[1, 0] > grid[1, 1]


# --------------------------------------------------------------------------- native syntax
def _trace(box_text: str) -> str:
    return (
        "Global analysis: a broad smile.\nVerification loop:\n"
        f"Inspect cheeks → raised with crow's feet → AU6 AU12 {box_text}\n"
        "Final conclusion: Combined AU6 + AU12 indicate happiness.\n<answer> happiness </answer>"
    )


NATIVE = {
    "internvl": "<ref>cheeks</ref><box>[[250, 100, 750, 900]]</box>",
    "llava_onevision": "<bbox>[250,100,750,900]</bbox>",
    "gemma3": "<bbox>[250,100,750,900]</bbox>",
    "smolvlm": "<bbox>[250,100,750,900]</bbox>",
}


@pytest.mark.parametrize("family", NEW)
def test_native_syntax_parses_to_the_right_pixel_box(family: str) -> None:
    """A known box written in the family's own syntax -> the right box in image pixels, by
    parse_trace and parse_batch (strings and the family's token ids) alike."""
    from tag_model.backbones._tiny_families import build_family_tokenizer

    text = _trace(NATIVE[family])
    parsed = parse_trace(text, labels=LABELS)
    assert parsed.format_ok, parsed.errors
    assert parsed.pairs() == [(6, (250.0, 100.0, 750.0, 900.0)), (12, (250.0, 100.0, 750.0, 900.0))]
    ad = get_adapter(family)
    px = ad.to_pixels(np.array([b for _, b in parsed.pairs()]), (640, 480))
    np.testing.assert_allclose(px, [[160, 48, 480, 432]] * 2)
    batch = parse_batch([text, "garbage"], labels=LABELS)
    assert batch.format_ok.tolist() == [True, False]
    np.testing.assert_array_equal(batch.pred_boxes[0, :2], [[250, 100, 750, 900]] * 2)
    tok = build_family_tokenizer(family)
    ids = np.array([tok(text).input_ids])
    by_ids = parse_batch(ids, labels=LABELS, tokenizer=tok)
    assert by_ids.format_ok.tolist() == [True]
    np.testing.assert_array_equal(by_ids.pred_boxes[0, :2], batch.pred_boxes[0, :2])


@pytest.mark.parametrize(
    "box_text, ok",
    [
        ("<BOX>[[250,100,750,900]]</BOX>", True),  # tags are case-insensitive
        ("<box>[[ 250 , 100 , 750 , 900 ]]</box>", True),
        ("<box>[[250, 100, 750, 900], [1, 2, 3, 4]]</box>", False),  # two boxes: one step, one box
        ("<box>[[250, 100, 750, 900]</box>", False),  # unbalanced
        ("<box>[250, 100, 750, 900]</box>", False),  # single brackets are not InternVL's
        ("<bbox>[[250, 100, 750, 900]]</bbox>", False),  # TAG's tag keeps TAG's grammar
    ],
)
def test_native_syntax_edge_cases_agree(box_text: str, ok: bool) -> None:
    text = _trace(box_text)
    parsed = parse_trace(text, labels=LABELS)
    batch = parse_batch([text], labels=LABELS)
    assert parsed.format_ok is ok, parsed.errors
    assert bool(batch.format_ok[0]) is ok
    assert int(batch.reason[0]) == int(parsed.reason)
    assert int(batch.n_pairs[0]) == len(parsed.pairs())


def test_native_rewrite_is_the_same_on_text_and_every_buffer() -> None:
    """The same-length rewrite agrees on str, UTF-8 bytes, code points and torch tensors."""
    from tag_model.grounding._native import normalise_native_boxes, normalise_native_text

    parts = ["<box>[[", "]]</box>", "<BOX>[[", "]]</Box>", "[[", "]]", "<bbox>[", "]</bbox>",
             "<box>[", "]]]</box>", "<box>[[[", "é", "→", "1, 2", " ", "\n", "<box>", "</box>"]  # fmt: skip
    rng = np.random.default_rng(1)
    for _ in range(300):
        text = "".join(rng.choice(parts, size=int(rng.integers(0, 12))))
        want = normalise_native_text(text)
        assert len(want) == len(text)
        utf8 = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        assert normalise_native_boxes(utf8).tobytes().decode("utf-8") == want
        cps = np.array([ord(c) for c in text], dtype=np.uint32)
        assert "".join(map(chr, normalise_native_boxes(cps.copy()).tolist())) == want
        t = torch.from_numpy(utf8.copy())
        assert bytes(normalise_native_boxes(t).numpy().tobytes()).decode("utf-8") == want
    assert normalise_native_text("<box>[[1, 2, 3, 4]]</box>") == "<bbox>[1, 2, 3, 4]</bbox>"
    assert normalise_native_text("<bbox>[[1]]</bbox>") == "<bbox>[[1]]</bbox>"


@pytest.mark.slow  # about a minute under the Triton interpreter on a shared CPU
def test_native_syntax_on_the_triton_token_path(monkeypatch) -> None:
    """InternVL token ids through the Triton path (the interpreter without a GPU) agree with
    the Numba path and parse_trace."""
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    from tag_model.backbones._tiny_families import build_family_tokenizer
    from tag_model.grounding import label_table, token_bytes
    from tag_model.grounding._triton import parse_batch_cuda

    tok = build_family_tokenizer("internvl")
    texts = [_trace(NATIVE["internvl"]), _trace("<BOX>[[1, 2, 30, 40]]</BOX>"), "no trace"]
    enc = [tok(t).input_ids for t in texts]
    T = max(map(len, enc))
    ids = np.full((len(enc), T), tok.pad_token_id, dtype=np.int64)
    for i, row in enumerate(enc):
        ids[i, : len(row)] = row
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    pb = parse_batch_cuda(
        torch.from_numpy(ids).to(dev), token_bytes(tok), label_table(LABELS), 8,
        tok.pad_token_id, None,
    )  # fmt: skip
    ref = parse_batch(ids, labels=LABELS, tokenizer=tok, max_pairs=8)
    for k in ("pred_au", "pred_boxes", "n_pairs", "answer_id", "format_ok", "reason"):
        got = getattr(pb, k)
        got = got.cpu().numpy() if hasattr(got, "cpu") else np.asarray(got)
        np.testing.assert_array_equal(got, getattr(ref, k), err_msg=k)
    assert ref.format_ok.tolist() == [True, True, False]
    assert ref.pred_boxes[1, 0].tolist() == [1.0, 2.0, 30.0, 40.0]
    assert parse_trace(texts[1], labels=LABELS).pairs()[0] == (6, (1.0, 2.0, 30.0, 40.0))


# --------------------------------------------------------------------------- tiny models
@pytest.fixture(scope="module")
def tiny() -> dict[str, tuple]:
    return {fam: make_tiny_vlm(fam, seed=0, **TINY) for fam in NEW}


#: family -> (image placeholder in the rendered prompt, end-of-turn token, model class)
LAYOUT = {
    "internvl": ("<|im_start|>user\n<IMG_CONTEXT>\n", "<|im_end|>", "InternVLForConditionalGeneration"),
    "llava_onevision": ("<|im_start|>user <image>\n", "<|im_end|>", "LlavaOnevisionForConditionalGeneration"),
    "gemma3": ("<bos><start_of_turn>user\n<start_of_image>", "<end_of_turn>", "Gemma3ForConditionalGeneration"),
    "smolvlm": ("<|im_start|>User:<image>", "<end_of_utterance>", "SmolVLMForConditionalGeneration"),
}  # fmt: skip
IMAGE_TOKENS = {
    "internvl": ("<img>", "<IMG_CONTEXT>", "</img>"),
    "llava_onevision": ("<image>",),
    "gemma3": ("<start_of_image>", "<image_soft_token>", "<end_of_image>"),
    "smolvlm": ("<fake_token_around_image>", "<global-img>", "<image>", "<row_1_col_1>"),
}


@pytest.mark.parametrize("family", NEW)
def test_tiny_model_has_the_family_tokens_template_and_tiling(tiny, family: str) -> None:
    model, processor = tiny[family]
    head, eot, cls = LAYOUT[family]
    assert type(model).__name__ == cls
    assert model.config.model_type == family
    assert sum(p.numel() for p in model.parameters()) < 400_000
    tok = processor.tokenizer
    assert tok.eos_token == eot
    face = Image.new("RGB", (160, 90), (150, 110, 90))  # non-square: 2 tiles + 1 in tiling families
    prompt = build_prompt_text(
        processor, build_messages(face, LABELS, family=family, style="compact")
    )
    assert prompt.startswith(head), prompt[:80]
    batch = processor(text=[prompt], images=[face], return_tensors="pt")
    ids = batch["input_ids"][0].tolist()
    for t in IMAGE_TOKENS[family]:
        tid = tok.convert_tokens_to_ids(t)
        assert tid is not None and tid != tok.unk_token_id and tid in ids, t
    rows, cols, n = get_adapter(family, processor=processor).tile_grid(face.size)
    pv = batch["pixel_values"]
    assert n == (pv.shape[0] if pv.ndim == 4 else pv.shape[1])  # squares the tower encodes
    if family == "internvl":  # the grid closest in aspect ratio: two tiles + a thumbnail
        assert (rows, cols, n) == (1, 2, 3)
    elif (
        family == "llava_onevision" or family == "smolvlm"
    ):  # the pinpoint with the most effective resolution: 2x2
        assert (rows, cols, n) == (2, 2, 5)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()


@pytest.mark.parametrize("family", NEW)
def test_tiny_model_saves_loads_and_generates(tiny, family: str, tmp_path) -> None:
    make_tiny_vlm(family, seed=0, save_dir=tmp_path, **TINY)
    model, processor, adapter = load_backbone(tmp_path, dtype=torch.float32)
    assert adapter.family == family and type(model).__name__ == LAYOUT[family][2]
    assert adapter.tiling == get_adapter(family, processor=tiny[family][1]).tiling
    a, _ = tiny[family]
    for (n1, p1), (n2, p2) in zip(a.state_dict().items(), model.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2), n1
    faces = [
        Image.new("RGB", (112, 112), (150, 110, 90)),
        Image.new("RGB", (90, 130), (90, 90, 90)),
    ]
    out = generate_completions(
        model, processor, faces, LABELS, family=adapter, style="compact", max_new_tokens=4
    )
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    with pytest.raises(ValueError, match="family"):
        load_backbone(tmp_path, family="qwen2_vl")
    with pytest.raises(ValueError, match=r"preprocessor_config\.json"):  # Qwen-only, else ignored
        load_backbone(tmp_path, processor_kwargs={"max_pixels": 448 * 448})


def test_internvl_grounding_tags_survive_skip_special_tokens(tmp_path) -> None:
    """A tokenizer that marks <box>/</box> special (as the released InternVL ones do, as far as
    we know) loses them in TRL's and tag-eval's ``decode(skip_special_tokens=True)``; TAG's
    processors keep them."""
    from tag_model.backbones import load_processor
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    text = "Inspect cheeks → raised → AU6 <ref>cheeks</ref><box>[[1, 2, 30, 40]]</box>"
    _, processor = make_tiny_vlm("internvl", **TINY)
    tok = processor.tokenizer
    ids = tok(text).input_ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    # a folder whose tokenizer marks the tags special, as the released ones do
    tags = [AddedToken(t, special=True, normalized=False) for t in ("<box>", "</box>")]
    tok.add_tokens(tags, special_tokens=True)
    processor.save_pretrained(tmp_path)
    plain = AutoTokenizer.from_pretrained(tmp_path)
    if "<box>" in plain.decode(ids, skip_special_tokens=True):
        pytest.skip("this tokenizers version cannot re-mark an added token special")
    assert plain.decode(ids, skip_special_tokens=True).endswith("[[1, 2, 30, 40]]")
    again = load_processor(tmp_path)  # what load_backbone and tag-eval use
    assert again.tokenizer.decode(ids, skip_special_tokens=True) == text
    assert again.tokenizer(text).input_ids == ids


@pytest.mark.parametrize("family", NEW)
def test_freezing_policy(tiny, family: str) -> None:
    model, _ = make_tiny_vlm(family, seed=0, **TINY)
    report = freeze_for_training(model)
    parts = report.by_part
    assert parts["vision"].trainable == 0 and parts["vision"].total > 0
    assert parts["merger"].trainable == parts["merger"].total > 0
    assert parts["language_model"].trainable == parts["language_model"].total > 0
    assert "other" not in parts, [n for n, _ in model.named_parameters() if part_of(n) == "other"]

    model, _ = make_tiny_vlm(family, seed=0, **TINY)
    lora = freeze_for_training(model, lora=LoraSpec(r=2, alpha=4))
    names = [n for n, p in lora.model.named_parameters() if p.requires_grad]
    lora_names = [n for n in names if "lora_" in n]
    assert lora_names and all(part_of(n) == "language_model" for n in lora_names)
    for proj in ("q_proj", "v_proj", "down_proj"):
        assert any(f"{proj}.lora_A" in n for n in lora_names), proj
    assert lora.by_part["vision"].trainable == 0
    assert lora.by_part["merger"].trainable > 0  # the projector is a module to save
    assert not [n for n in names if "lora_" not in n and part_of(n) != "merger"]


def test_readme_backbone_table_lists_every_family() -> None:
    """README's backbone table: one row per family with its box convention and a source."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Backbones\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`") and cells[0] != "---":
            rows[cells[0].strip("`")] = cells
    assert set(rows) == set(FAMILIES)
    for fam, (_, ckpt, convention, native, _, source) in rows.items():
        spec = family_spec(fam)
        assert ckpt.strip("`") == spec.example_checkpoint
        want = "0-1000 relative" if spec.coord_space == "relative_1000" else "absolute pixels"
        assert convention.startswith(want), (fam, convention)
        if spec.native_box and fam not in QWEN_FAMILIES:
            assert spec.native_box in native
        assert "arXiv" in source or "model card" in source, (fam, source)
