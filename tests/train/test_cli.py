"""The ``tag-train`` console script: help, YAML configs through TRL's parser, flag overrides."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
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


#: the checkpoints the example configs name, one family each
_HUB_PREFIXES = (
    "Qwen/Qwen2.5-VL-",
    "OpenGVLab/InternVL3-",
    "llava-hf/llava-onevision-",
    "google/gemma-3-",
    "HuggingFaceTB/SmolVLM2-",
)


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
        assert script.dataset_path and script.model_name_or_path.startswith(_HUB_PREFIXES)
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
    assert _only_demo_flags(["--preset=smoke", "--run_dir", "runs/x", "--cache_dir=c"])
    assert _only_demo_flags(["--preset", "default", "--no_cache", "--seed", "-1"])
    # the demo's own flags without --preset are no demo call (they need --dataset_path)
    assert not _only_demo_flags(["--run_dir", "runs/x", "--cache_dir=c"])
    assert not _only_demo_flags(["--dataset_path", "traces", "--model_name_or_path", "m"])
    assert not _only_demo_flags(["--preset", "smoke", "--help"])
    assert not _only_demo_flags(["--preset", "smoke", "--learning_rate", "1e-6"])
    assert _only_demo_flags(["--preset", "default", "--labels", "rafdb"])


def test_demo_labels_option(monkeypatch, capsys):
    import tag_train.demo._run as demo

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda preset, *a, **k: seen.append(preset))
    assert main(["rl", "--preset", "smoke", "--labels", "rafdb"]) == 0
    assert seen[-1].labels == tuple(get_label_space("rafdb").names) == demo.PRESETS["smoke"].labels
    assert main(["rl", "--preset", "smoke", "--labels", "neutral, anger"]) == 0
    assert seen[-1].labels == ("neutral", "anger")
    assert seen[-1].key() != demo.PRESETS["smoke"].key()  # its own cache
    assert main(["rl", "--preset", "smoke", "--base", "warmup"]) == 0
    assert seen[-1].base == "warmup" and seen[-1].key() != demo.PRESETS["smoke"].key()
    with pytest.raises(SystemExit, match="unknown: happy"):
        main(["rl", "--preset", "smoke", "--labels", "happy,anger"])


# -- expected failures: one line on stderr, a distinct exit status ---------------------------


def _one_err_line(capsys) -> str:
    """The error: one line, the last on stderr, and no traceback. (Progress bars and library
    warnings printed before it, by the datasets library or transformers, are not ours.)"""
    err = capsys.readouterr().err.strip()
    ours = [x for x in err.splitlines() if x.startswith("tag-train")]
    assert len(ours) == 1 and err.splitlines()[-1] == ours[0], err
    assert "Traceback" not in err, err
    return ours[0]


def _trace_dataset(path: Path) -> Path:
    """A one-row trace dataset with the columns `tag-train sft` reads."""
    from PIL import Image

    ds = datasets.Dataset.from_dict(
        {
            "image": [Image.new("RGB", (32, 32))],
            "prompt": [[{"role": "user", "content": [{"type": "text", "text": "x"}]}]],
            "trace": ["<answer> happiness </answer>"],
        }
    )
    ds.save_to_disk(str(path))
    return path


def test_rl_without_dataset_path_is_an_error_not_the_demo(tmp_path, capsys):
    from tag_train.cli import EXIT_CODES

    rc = main(["rl", "--output_dir", str(tmp_path / "o"), "--model_name_or_path", "m"])
    assert rc == EXIT_CODES["usage"] == 2
    err = _one_err_line(capsys)
    assert "--dataset_path" in err and "--preset" in err
    assert not (tmp_path / "o").exists() and not any(tmp_path.glob("demo-*"))
    # the demo's flags without --preset are no demo call either
    rc = main(["rl", "--run_dir", str(tmp_path / "d")])
    assert rc == 2 and "--dataset_path" in _one_err_line(capsys)
    assert not (tmp_path / "d").exists()
    # --preset with a training option: the demo would ignore it
    rc = main(["rl", "--preset", "smoke", "--learning_rate", "1e-6"])
    err = _one_err_line(capsys)
    assert rc == 2 and "--learning_rate" in err and "--preset" in err
    # ... and so does a preset given in a config file
    cfg = tmp_path / "rl.yaml"
    cfg.write_text("preset: smoke\nlearning_rate: 1.0e-6\n")
    rc = main(["rl", "--config", str(cfg)])
    assert rc == 2 and "preset" in _one_err_line(capsys)


def test_missing_dataset_path_is_a_dataset_error(tmp_path, capsys):
    from tag_train.cli import EXIT_CODES

    args = ["sft", "--model_name_or_path", "m", "--output_dir", str(tmp_path / "o")]
    rc = main([*args, "--dataset_path", str(tmp_path / "nonexistent")])
    assert rc == EXIT_CODES["dataset"] == 4
    assert "nonexistent" in _one_err_line(capsys)
    # --debug shows the traceback, the status stays
    rc = main([*args, "--dataset_path", str(tmp_path / "nonexistent"), "--debug"])
    err = capsys.readouterr().err
    assert rc == 4 and "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("tag-train sft: error:")


def test_missing_model_and_unknown_family(tmp_path, capsys):
    from tag_train.cli import EXIT_CODES

    data = _trace_dataset(tmp_path / "traces")
    capsys.readouterr()  # the dataset's save progress
    args = ["sft", "--dataset_path", str(data), "--output_dir", str(tmp_path / "o")]
    rc = main([*args, "--model_name_or_path", str(tmp_path / "no_such_model")])
    assert rc == EXIT_CODES["model"] == 3
    err = _one_err_line(capsys)
    assert "no_such_model" in err
    rc = main([*args, "--model_name_or_path", str(tmp_path / "m"), "--family", "nosuchvlm"])
    assert rc == 2 and "nosuchvlm" in _one_err_line(capsys)


def test_bad_config_key_and_missing_config(tmp_path, capsys):
    cfg = tmp_path / "traces.yaml"
    cfg.write_text(f"output_dir: {tmp_path / 'o'}\ndataset: synth\ntop_kk: 3\n")
    rc = main(["traces", "--config", str(cfg)])
    assert rc == 2 and "top_kk" in _one_err_line(capsys)
    rc = main(["traces", "--config", str(tmp_path / "none.yaml")])
    assert rc == 2 and "none.yaml" in _one_err_line(capsys)
    assert main(["nope"]) == 2 and "unknown command 'nope'" in _one_err_line(capsys)


def _raf_copy(synth_root: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(synth_root, dst)
    return dst


def test_malformed_rafdb_line_names_file_and_line(synth_root, tmp_path, capsys):
    root = _raf_copy(synth_root, tmp_path / "raf")
    labels = root / "EmoLabel" / "list_patition_label.txt"
    n = len(labels.read_text().splitlines())
    with labels.open("a") as fh:
        fh.write("train_00099.jpg happy\n")
    rc = main(
        [
            "traces",
            "--dataset",
            "rafdb",
            "--data_root",
            str(root),
            "--output_dir",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 4
    err = _one_err_line(capsys)
    assert "list_patition_label.txt" in err and f"line {n + 1}" in err and "happy" in err
    rc = main(
        ["traces", "--dataset", "rafdb", "--data_root", str(tmp_path / "nope"), "--output_dir", "o"]
    )
    assert rc == 4 and "--data_root not found" in _one_err_line(capsys)


def test_traces_skip_missing(synth_root, tmp_path, capsys):
    root = _raf_copy(synth_root, tmp_path / "raf")
    (root / "Image" / "aligned" / "train_00002_aligned.jpg").unlink()
    args = [
        "traces",
        "--dataset",
        "rafdb",
        "--data_root",
        str(root),
        "--limit",
        "2",
        "--use_dlib",
        "false",
        "--min_face_px",
        "32",
        "--progress",
        "false",
    ]
    rc = main([*args, "--output_dir", str(tmp_path / "a")])
    err = _one_err_line(capsys)
    assert rc == 4 and "train_00002" in err and "--skip_missing" in err
    rc = main([*args, "--output_dir", str(tmp_path / "b"), "--skip_missing"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "skipped 1 row(s) with missing or corrupt images" in out and "train_00002" in out
    assert "trace build:" in out


def test_console_script_one_line_error_subprocess(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tag_train.cli",
            "sft",
            "--dataset_path",
            "/nonexistent/traces",
            "--model_name_or_path",
            "m",
            "--output_dir",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 4
    assert "Traceback" not in r.stderr
    # the last line; lines before it are transformers' own deprecation warnings, if any
    assert r.stderr.strip().splitlines()[-1] == (
        "tag-train sft: error: Directory /nonexistent/traces not found"
    )


def test_help_documents_exit_statuses(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit status" in out and "--debug" in out and "--dataset_path" in out
