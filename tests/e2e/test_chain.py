"""A researcher's chain through the ``tag-train`` CLI, with a tiny VLM and 16 SynthFACS faces.

LoRA: ``traces`` -> ``sft --use_peft`` -> ``rl`` on the adapter (continues it) -> ``merge`` ->
the merged folder loads with ``load_backbone`` and generates. Full weights: ``traces`` ->
``sft`` -> ``rl``. Every checkpoint (and output folder) carries ``tag_settings.json``.

The :func:`merged_dir` fixture returns the merged full checkpoint (with ``tag_settings.json``)
for a following ``tag-eval run`` step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tag_model.au import RAFDB

# tiny steps: one process, float32 on the CPU, no gradient checkpointing
CPU = ["--report_to", "none", "--logging_steps", "1", "--bf16", "false"]
CPU += ["--gradient_checkpointing", "false", "--dataloader_num_workers", "0"]
EXPECTED = {
    "family": "qwen2_vl",
    "coord_space": "relative_1000",
    "label_space": "rafdb",
    "labels": list(RAFDB.names),
    "prompt_style": "compact",
    "detector": "geometric",
}


def _cli(args: list[str]) -> None:
    from tag_train.cli import main

    assert main([str(a) for a in args]) == 0


def _settings(folder: Path) -> dict:
    from tag_model.backbones import load_tag_settings

    found = load_tag_settings(folder)
    assert found is not None, f"no tag_settings.json in {folder}: {sorted(os.listdir(folder))}"
    d = found.to_dict()
    d.pop("version")
    return d


@pytest.fixture(scope="module")
def chain_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chain")


@pytest.fixture(scope="module")
def base_dir(chain_root: Path) -> Path:
    from tests.train.conftest import build_tiny

    return build_tiny(chain_root / "base")


@pytest.fixture(scope="module")
def traces_dir(chain_root: Path) -> Path:
    out = chain_root / "traces"
    _cli(
        ["traces", "--dataset", "synth", "--data_root", chain_root / "synth", "--synth_n", 20,
         "--split", "train", "--output_dir", out, "--family", "qwen2_vl", "--label_space", "rafdb",
         "--prompt_style", "compact", "--min_face_px", 32, "--use_dlib", "false",
         "--progress", "false"]
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def lora_chain(chain_root: Path, base_dir: Path, traces_dir: Path) -> dict:
    sft, rl, merged = chain_root / "sft-lora", chain_root / "rl-lora", chain_root / "merged"
    _cli(
        ["sft", "--model_name_or_path", base_dir, "--dataset_path", traces_dir,
         "--output_dir", sft, "--use_peft", "true", "--lora_r", 4, "--lora_alpha", 8,
         "--max_steps", 2, "--save_steps", 1, "--per_device_train_batch_size", 2,
         "--learning_rate", "1e-3", *CPU]
    )  # fmt: skip
    _cli(
        ["rl", "--model_name_or_path", sft, "--dataset_path", traces_dir, "--output_dir", rl,
         "--max_steps", 1, "--save_steps", 1, "--per_device_train_batch_size", 2,
         "--num_generations", 2, "--max_completion_length", 16, "--learning_rate", "1e-3",
         *CPU]
    )  # fmt: skip
    _cli(["merge", "--adapter", rl, "--output_dir", merged])
    return {"sft": sft, "rl": rl, "merged": merged}


@pytest.fixture(scope="module")
def merged_dir(lora_chain: dict) -> Path:
    """The merged full checkpoint of the LoRA chain (weights, processor, tag_settings.json)."""
    return lora_chain["merged"]


def test_traces_record_their_settings(traces_dir: Path) -> None:
    assert _settings(traces_dir) == EXPECTED


def test_lora_sft_saves_an_adapter_with_settings(lora_chain: dict) -> None:
    from tag_model.backbones import checkpoint_kind

    sft = lora_chain["sft"]
    assert checkpoint_kind(sft) == "adapter"
    for folder in (sft, sft / "checkpoint-1", sft / "checkpoint-2"):
        assert _settings(folder) == EXPECTED, folder
    assert (sft / "checkpoint-1" / "adapter_config.json").is_file()


def test_rl_continues_the_adapter(lora_chain: dict, base_dir: Path) -> None:
    from safetensors.torch import load_file
    from tag_model.backbones import checkpoint_kind

    sft, rl = lora_chain["sft"], lora_chain["rl"]
    assert checkpoint_kind(rl) == "adapter"
    assert _settings(rl) == _settings(rl / "checkpoint-1") == EXPECTED
    cfg = json.loads((rl / "adapter_config.json").read_text())
    # the same adapter on the same base: not an adapter stacked on the SFT adapter
    assert Path(cfg["base_model_name_or_path"]).resolve() == base_dir.resolve()
    assert cfg["r"] == 4
    a = load_file(sft / "adapter_model.safetensors")
    b = load_file(rl / "adapter_model.safetensors")
    assert a.keys() == b.keys() and any("lora_A" in k for k in a)


def test_rl_takes_the_label_space_from_the_input_checkpoint(lora_chain: dict) -> None:
    from tag_train._settings_callback import checkpoint_defaults

    args = SimpleNamespace(model_name_or_path=str(lora_chain["sft"]), label_space=None, family=None)
    found = checkpoint_defaults(args)
    assert found is not None and args.label_space == "rafdb" and args.family == "qwen2_vl"
    args = SimpleNamespace(model_name_or_path=str(lora_chain["sft"]), label_space="ferplus")
    checkpoint_defaults(args)
    assert args.label_space == "ferplus"  # the command line wins


def test_merge_writes_a_full_hf_checkpoint(merged_dir: Path) -> None:
    from tag_model.backbones import checkpoint_kind
    from tag_train.merge import check_hf_layout

    assert check_hf_layout(merged_dir) == []
    files = {p.name for p in merged_dir.iterdir()}
    assert {
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "processor_config.json", "preprocessor_config.json", "chat_template.jinja",
        "tag_settings.json",
    } <= files, sorted(files)  # fmt: skip
    assert checkpoint_kind(merged_dir) == "full"
    assert not (merged_dir / "adapter_config.json").exists()
    assert _settings(merged_dir) == EXPECTED
    cfg = json.loads((merged_dir / "config.json").read_text())
    assert cfg["model_type"] == "qwen2_vl"


def test_merged_model_equals_base_plus_adapter_and_generates(
    lora_chain: dict, merged_dir: Path
) -> None:
    from PIL import Image
    from tag_model.backbones import (
        build_messages,
        build_prompt_text,
        generate_completions,
        load_backbone,
    )
    from tag_model.grounding import parse_trace

    merged, processor, adapter = load_backbone(merged_dir, dtype=torch.float32)
    assert type(merged).__name__ == "Qwen2VLForConditionalGeneration"
    peft_model, _, _ = load_backbone(lora_chain["rl"], dtype=torch.float32)
    face = Image.new("RGB", (112, 112), (150, 110, 90))
    prompt = build_prompt_text(
        processor, build_messages(face, RAFDB.names, family=adapter, style="compact")
    )
    batch = processor(text=[prompt], images=[face], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(
            merged(**batch).logits, peft_model(**batch).logits, atol=1e-4, rtol=1e-4
        )
    out = generate_completions(
        merged, processor, [face], RAFDB.names, family=adapter, style="compact", max_new_tokens=8
    )
    assert len(out) == 1 and isinstance(out[0], str)
    parse_trace(out[0], labels=RAFDB.names)  # any text parses (a tiny random model's too)


def test_full_weights_chain(chain_root: Path, base_dir: Path, traces_dir: Path) -> None:
    from tag_model.backbones import checkpoint_kind

    sft, rl = chain_root / "sft-full", chain_root / "rl-full"
    _cli(
        ["sft", "--model_name_or_path", base_dir, "--dataset_path", traces_dir,
         "--output_dir", sft, "--max_steps", 2, "--save_steps", 2,
         "--per_device_train_batch_size", 2, "--learning_rate", "1e-3", "--dtype", "float32",
         *CPU]
    )  # fmt: skip
    assert checkpoint_kind(sft) == "full"
    assert _settings(sft) == _settings(sft / "checkpoint-2") == EXPECTED
    _cli(
        ["rl", "--model_name_or_path", sft, "--dataset_path", traces_dir, "--output_dir", rl,
         "--max_steps", 1, "--save_steps", 1, "--per_device_train_batch_size", 2,
         "--num_generations", 2, "--max_completion_length", 16, *CPU]
    )  # fmt: skip
    assert checkpoint_kind(rl) == "full"
    assert _settings(rl) == _settings(rl / "checkpoint-1") == EXPECTED


def test_settings_of_older_trace_builds(traces_dir: Path, tmp_path: Path) -> None:
    """A trace dataset without tag_settings.json: the build manifest, else the prompts."""
    import shutil

    from datasets import load_from_disk
    from tag_train._settings_callback import run_settings, trace_settings

    old = tmp_path / "old"
    shutil.copytree(traces_dir, old)
    (old / "tag_settings.json").unlink()
    found = trace_settings(old)
    assert found.labels == RAFDB.names and found.prompt_style == "compact"
    assert found.detector is None and found.family == "qwen2_vl"
    shutil.rmtree(old / "_build")
    assert trace_settings(old) is None
    args = SimpleNamespace(dataset_path=str(old), model_name_or_path=None, label_space="rafdb")
    s = run_settings(args, load_from_disk(str(old)), family="qwen2_vl")
    assert s.prompt_style == "compact"  # read off the prompts themselves
    assert s.labels == RAFDB.names and s.label_space == "rafdb"


@pytest.fixture(scope="module")
def eval_faces(chain_root: Path) -> Path:
    from tag_model.synth import write_rafdb_layout

    root = chain_root / "eval-faces"
    write_rafdb_layout(root, 10, size=112, seed=99, test_fraction=0.4)
    return root


@pytest.mark.parametrize("which", ["merged", "rl"])
def test_tag_eval_runs_on_the_chain_with_its_training_settings(
    lora_chain: dict, eval_faces: Path, chain_root: Path, which: str
) -> None:
    """The last step of the chain: ``tag-eval run`` on the merged folder (and on the adapter
    folder itself) with no prompt or label flags takes the prompt style and labels the model
    was trained with from its ``tag_settings.json``."""
    from tag_eval.cli import main as eval_main

    out = chain_root / f"eval-{which}"
    rc = eval_main(
        ["run", "--model_name_or_path", str(lora_chain[which]), "--dataset", "rafdb",
         "--data_root", str(eval_faces), "--split", "test", "--output_dir", str(out),
         "--max_new_tokens", "16", "--per_device_eval_batch_size", "2", "--device", "cpu",
         "--no_progress"]
    )  # fmt: skip
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    assert run["prompt"] == EXPECTED["prompt_style"]  # run.json keeps its own key names
    assert run["label_space"]["names"] == EXPECTED["labels"]
    metrics = json.loads((out / "metrics.json").read_text())
    n = sum(1 for line in (out / "samples.jsonl").read_text().splitlines() if line.strip())
    assert n == run["n_dataset"] == 4
    assert 0.0 <= metrics["classification"]["accuracy"] <= 1.0
