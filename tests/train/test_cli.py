"""The ``tag-train`` console script: help, YAML configs through TRL's parser, flag overrides."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import tag_train
from tag_model.au import get_label_space
from tag_train.cli import main


def test_help_lists_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("traces", "sft", "rl", "demo", "--config"):
        assert word in out


def test_no_command_is_an_error(capsys):
    assert main([]) == 2


def test_subcommand_help_comes_from_trl_parser():
    r = subprocess.run(
        [sys.executable, "-m", "tag_train.cli", "sft", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "--dataset_path" in r.stdout and "--learning_rate" in r.stdout and "--lora" in r.stdout


def test_traces_yaml_config_and_flag_override(synth_root, tmp_path, capsys):
    cfg = tmp_path / "traces.yaml"
    out = tmp_path / "out"
    cfg.write_text(
        f"dataset: synth_layout_not_a_reader\n"
        f"output_dir: {out}\n"
        f"family: qwen2_vl\n"
        f"top_k: 2\n"
        f"limit: 3\n"
        f"min_face_px: 32\n"
        f"use_dlib: false\n"
        f"progress: false\n"
        f"label_space: rafdb\n"
    )
    # flags override the YAML: the dataset and top_k
    rc = main(
        [
            "traces",
            "--config",
            str(cfg),
            "--dataset",
            "rafdb",
            "--data_root",
            str(synth_root),
            "--top_k",
            "3",
        ]
    )
    assert rc == 0
    manifest = json.loads((out / "_build" / "manifest.json").read_text())
    assert manifest["config"]["top_k"] == 3
    assert manifest["config"]["family"] == "qwen2_vl"
    assert manifest["rows"] == 3
    assert manifest["config"]["labels"] == list(get_label_space("rafdb").names)  # the YAML's
    assert "trace build:" in capsys.readouterr().out
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 3
    assert all(len(a) <= 3 for a in ds["activated"])  # --top_k 3 won over the YAML's 2


def test_example_configs_ship_and_parse():
    from tag_train._args import RLScriptArguments, SFTScriptArguments
    from trl import GRPOConfig, SFTConfig, TrlParser

    root = Path(tag_train.__file__).parent / "configs"
    sft = sorted(root.glob("sft_*.yaml"))
    grpo = sorted(root.glob("grpo_*.yaml"))
    assert len(sft) >= 6 and len(grpo) >= 6
    for path in sft:
        script, targs = TrlParser((SFTScriptArguments, SFTConfig)).parse_args_and_config(
            ["--config", str(path), "--bf16", "false"]
        )
        assert script.dataset_path and script.model_name_or_path.startswith("Qwen/Qwen2.5-VL-")
        assert targs.num_train_epochs == 2 and not script.train_vision
    for path in grpo:
        script, targs = TrlParser((RLScriptArguments, GRPOConfig)).parse_args_and_config(
            ["--config", str(path), "--bf16", "false"]
        )
        assert targs.num_generations == 8 and targs.temperature == 1.0
        assert targs.learning_rate == 1e-6 and targs.max_completion_length == 1024
        assert len(targs.reward_weights) == 3
    # the launcher configs the README's multi-GPU commands name
    assert {p.name for p in (root / "accelerate").iterdir()} >= {
        "multi_gpu.yaml",
        "deepspeed_zero2.yaml",
        "deepspeed_zero3.yaml",
    }
    for stage in (2, 3):
        ds_cfg = json.loads((root / "deepspeed" / f"zero{stage}.json").read_text())
        assert ds_cfg["zero_optimization"]["stage"] == stage


def test_rl_routes_demo_flags_to_the_demo():
    from tag_train.cli import _only_demo_flags

    assert _only_demo_flags(["--preset", "smoke"])
    assert _only_demo_flags(["--run_dir", "runs/x", "--cache_dir=c"])
    assert not _only_demo_flags(["--dataset_path", "traces", "--model_name_or_path", "m"])
    assert not _only_demo_flags(["--preset", "smoke", "--help"])
