"""Model-loading options of ``tag-train sft|rl`` (TRL ``ModelConfig`` names), on the CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from tag_train._args import ModelArguments, RLScriptArguments, SFTScriptArguments
from tag_train._common import load_model_for_training


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    from tag_model.backbones import make_tiny_vlm

    out = tmp_path_factory.mktemp("tiny")
    make_tiny_vlm(
        "qwen2_vl", save_dir=out, text_hidden=64, text_layers=2, text_heads=2, text_kv_heads=1,
        text_intermediate=128, vision_depth=1, vision_width=32, vision_heads=2,
    )  # fmt: skip
    return out


def _args(tiny_dir: Path, **kw) -> ModelArguments:
    return ModelArguments(model_name_or_path=str(tiny_dir), **kw)


def test_field_names_are_trl_model_config_names() -> None:
    from trl import ModelConfig

    ours = {f.name for f in dataclasses.fields(ModelArguments)}
    trl_names = {f.name for f in dataclasses.fields(ModelConfig)}
    shared = {
        "model_name_or_path", "dtype", "attn_implementation", "use_peft", "lora_r",
        "lora_alpha", "lora_dropout", "lora_target_modules", "load_in_4bit", "load_in_8bit",
        "bnb_4bit_quant_type", "use_bnb_nested_quant",
    }  # fmt: skip
    assert shared <= ours and shared <= trl_names
    assert "lora" not in ours  # the old switch is gone: --use_peft
    assert {"min_pixels", "max_pixels", "family", "train_vision", "train_merger"} <= ours
    for cls in (SFTScriptArguments, RLScriptArguments):
        assert ours <= {f.name for f in dataclasses.fields(cls)}


def test_the_cli_parses_the_options() -> None:
    from trl import SFTConfig, TrlParser

    parser = TrlParser((SFTScriptArguments, SFTConfig))
    script, _ = parser.parse_args_and_config(
        ["--model_name_or_path", "m", "--use_peft", "--lora_r", "4", "--lora_target_modules",
         "q_proj", "v_proj", "--dtype", "bfloat16", "--attn_implementation", "eager",
         "--min_pixels", "784", "--max_pixels", "3136", "--output_dir", "o", "--bf16", "false"]
    )  # fmt: skip
    assert (
        script.use_peft
        and script.lora_r == 4
        and script.lora_target_modules == ["q_proj", "v_proj"]
    )
    assert (script.dtype, script.attn_implementation) == ("bfloat16", "eager")
    assert (script.min_pixels, script.max_pixels) == (784, 3136)
    with pytest.raises(ValueError, match="exclude each other"):
        ModelArguments(load_in_4bit=True, load_in_8bit=True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dtype(tiny_dir: Path, dtype: str) -> None:
    model, _, _, _ = load_model_for_training(_args(tiny_dir, dtype=dtype))
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_attn_implementation(tiny_dir: Path, impl: str) -> None:
    model, _, _, _ = load_model_for_training(_args(tiny_dir, attn_implementation=impl))
    assert model.config._attn_implementation == impl
    assert model.config.text_config._attn_implementation == impl


def test_pixel_budget_changes_the_processor(tiny_dir: Path) -> None:
    from PIL import Image

    face = Image.new("RGB", (112, 112), (120, 90, 80))
    _, default, ad0, _ = load_model_for_training(_args(tiny_dir))
    _, small, ad, _ = load_model_for_training(_args(tiny_dir, min_pixels=784, max_pixels=3136))
    assert small.image_processor.size["longest_edge"] == 3136 == ad.max_pixels
    assert small.image_processor.size["shortest_edge"] == 784
    assert ad0.max_pixels == default.image_processor.size["longest_edge"] != 3136

    def grid(p) -> int:
        return int(p.image_processor(images=[face], return_tensors="pt")["image_grid_thw"].prod())

    assert grid(small) < grid(default)
    with pytest.raises(ValueError, match="min_pixels"):
        load_model_for_training(_args(tiny_dir, min_pixels=5000, max_pixels=3136))


def test_use_peft_and_lora_options(tiny_dir: Path) -> None:
    from peft import PeftModel

    model, _, _, report = load_model_for_training(
        _args(tiny_dir, use_peft=True, lora_r=2, lora_alpha=4, lora_dropout=0.0,
              lora_target_modules=["q_proj"])
    )  # fmt: skip
    assert isinstance(model, PeftModel)
    cfg = model.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (2, 4, 0.0)
    lora = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert lora and all("q_proj" in n for n in lora)
    assert report.by_part["vision"].trainable == 0


def test_an_adapter_folder_continues_training(tiny_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    model, _, _, _ = load_model_for_training(_args(tiny_dir, use_peft=True, lora_r=2))
    model.save_pretrained(tmp_path / "adapter")
    again, _, ad, report = load_model_for_training(_args(tmp_path / "adapter", lora_r=8))
    assert isinstance(again, PeftModel) and ad.family == "qwen2_vl"
    assert again.peft_config["default"].r == 2  # the adapter's own rank, not --lora_r
    trainable = [n for n, p in again.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert report.trainable == sum(p.numel() for p in again.parameters() if p.requires_grad)


def test_quantization_is_a_clear_error_without_bitsandbytes_or_cuda(tiny_dir: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available():
        pytest.skip("bitsandbytes and CUDA are both here: 4-bit loading would work")
    for flag in ("load_in_4bit", "load_in_8bit"):
        with pytest.raises(RuntimeError, match=f"--{flag}.*(bitsandbytes|CUDA)"):
            load_model_for_training(_args(tiny_dir, use_peft=True, **{flag: True}))
