"""The shipped configs and the commands of docs/real-run.md, checked against the installed tools.

* every YAML/JSON under ``tag_train/configs`` parses;
* every key of a ``sft_*``/``grpo_*``/``traces_*`` YAML is a field of ``SFTConfig``/``GRPOConfig``
  or of the script dataclasses (``tag_train._args``), and the whole file goes through
  ``TrlParser.parse_args_and_config`` as ``tag-train`` runs it. On a machine without CUDA,
  ``bf16: true`` makes ``TrainingArguments`` refuse the config ("doesn't support bf16/gpu"), so
  there the parse adds ``--bf16 false`` on the command line (flags win over the YAML); the key
  check covers ``bf16`` itself;
* every accelerate YAML loads with accelerate's own loader, its nested ``deepspeed_config`` /
  ``fsdp_config`` keys are ``accelerate launch`` options, and ``accelerate launch``'s own
  validation accepts it;
* every command in a ``bash`` block of docs/real-run.md parses with the real parser of its tool
  (``tag-train``, ``tag-eval``, ``accelerate launch``, ``trl vllm-serve``), and every config path
  the page names ships in the package. vLLM's own ``vllm serve`` is not installed and not checked.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest
import tag_train
import yaml

CONFIGS = Path(tag_train.__file__).parent / "configs"
REPO = Path(__file__).resolve().parents[2]
REAL_RUN = REPO / "docs" / "real-run.md"

SFT_YAMLS = sorted(CONFIGS.glob("sft_*.yaml"))
GRPO_YAMLS = sorted(CONFIGS.glob("grpo_*.yaml"))
TRACES_YAMLS = sorted(CONFIGS.glob("traces_*.yaml"))
ACCELERATE_YAMLS = sorted((CONFIGS / "accelerate").glob("*.yaml"))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _cpu_overrides(argv: list[str]) -> list[str]:
    """``--bf16 false`` where there is no CUDA (TrainingArguments refuses bf16 on the CPU)."""
    return [] if _cuda() else [*argv, "--bf16", "false"]


def _keys(path: Path) -> set[str]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name}: not a YAML mapping"
    return set(data)


def _field_names(*classes: type) -> set[str]:
    return {f.name for cls in classes for f in dataclasses.fields(cls)}


# fields that still parse but that the installed transformers warns about on every run
_DEPRECATED = {"gradient_checkpointing": "activation_checkpointing"}


def _check_not_deprecated(path: Path) -> None:
    for old, new in _DEPRECATED.items():
        assert old not in _keys(path), f"{path.name}: {old} is deprecated, write {new}"


# ---------------------------------------------------------------------------------------------
# every shipped file parses


def test_every_shipped_config_parses():
    files = sorted(CONFIGS.rglob("*"))
    yamls = [p for p in files if p.suffix in (".yaml", ".yml")]
    jsons = [p for p in files if p.suffix == ".json"]
    assert len(yamls) >= 21 and len(jsons) >= 2
    for path in yamls:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
    for path in jsons:
        assert isinstance(json.loads(path.read_text()), dict), path


def test_the_scale_out_recipes_ship():
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {
        "grpo_qwen2_5_vl_7b_rafdb_vllm_server.yaml",
        "grpo_qwen2_5_vl_7b_rafdb_vllm_colocate.yaml",
    } <= names
    assert {p.name for p in ACCELERATE_YAMLS} >= {
        "multi_gpu.yaml",
        "deepspeed_zero2.yaml",
        "deepspeed_zero3.yaml",
        "fsdp1.yaml",
        "fsdp2.yaml",
        "multi_node_zero3.yaml",
    }


# ---------------------------------------------------------------------------------------------
# training YAMLs: keys are real fields, and TRL's parser takes the whole file


@pytest.mark.parametrize("path", SFT_YAMLS, ids=lambda p: p.name)
def test_sft_yaml_keys_are_fields_and_parse(path):
    from tag_train._args import SFTScriptArguments
    from trl import SFTConfig, TrlParser

    unknown = _keys(path) - _field_names(SFTScriptArguments, SFTConfig)
    assert not unknown, f"{path.name}: not SFTConfig/SFTScriptArguments fields: {sorted(unknown)}"
    _check_not_deprecated(path)
    parser = TrlParser((SFTScriptArguments, SFTConfig))
    script, targs = parser.parse_args_and_config(_cpu_overrides(["--config", str(path)]))
    assert script.dataset_path and script.model_name_or_path and targs.output_dir


@pytest.mark.parametrize("path", GRPO_YAMLS, ids=lambda p: p.name)
def test_grpo_yaml_keys_are_fields_and_parse(path):
    from tag_train._args import RLScriptArguments
    from trl import GRPOConfig, TrlParser

    unknown = _keys(path) - _field_names(RLScriptArguments, GRPOConfig)
    assert not unknown, f"{path.name}: not GRPOConfig/RLScriptArguments fields: {sorted(unknown)}"
    _check_not_deprecated(path)
    parser = TrlParser((RLScriptArguments, GRPOConfig))
    script, targs = parser.parse_args_and_config(_cpu_overrides(["--config", str(path)]))
    assert script.dataset_path and script.model_name_or_path and targs.output_dir
    if targs.use_vllm:
        assert targs.vllm_mode in ("server", "colocate")


@pytest.mark.parametrize("path", TRACES_YAMLS, ids=lambda p: p.name)
def test_traces_yaml_keys_are_fields_and_parse(path):
    from tag_train._args import TracesArguments
    from trl import TrlParser

    unknown = _keys(path) - _field_names(TracesArguments)
    assert not unknown, f"{path.name}: not TracesArguments fields: {sorted(unknown)}"
    (args,) = TrlParser((TracesArguments,)).parse_args_and_config(["--config", str(path)])
    assert args.output_dir and args.data_root


_VLLM_KEYS = {
    "use_vllm",
    "vllm_mode",
    "vllm_server_host",
    "vllm_server_port",
    "vllm_group_port",
    "vllm_server_timeout",
    "vllm_gpu_memory_utilization",
    "vllm_tensor_parallel_size",
    "vllm_max_model_length",
    "vllm_enable_sleep_mode",
}
# the process counts docs/real-run.md launches the vLLM recipes with
_PROCESS_COUNTS = {"server": (1, 6, 7, 14), "colocate": (1, 8, 16)}


@pytest.mark.parametrize("mode", ["server", "colocate"])
def test_vllm_recipes_keep_the_7b_rafdb_hyperparameters(mode):
    base = yaml.safe_load((CONFIGS / "grpo_qwen2_5_vl_7b_rafdb.yaml").read_text())
    recipe = yaml.safe_load((CONFIGS / f"grpo_qwen2_5_vl_7b_rafdb_vllm_{mode}.yaml").read_text())
    assert recipe["use_vllm"] is True and recipe["vllm_mode"] == mode
    # the same recipe: only the output folder and the vLLM keys differ
    for key in set(base) - _VLLM_KEYS - {"output_dir"}:
        assert recipe.get(key) == base[key], f"{mode}: {key} {recipe.get(key)!r} != {base[key]!r}"
    assert recipe["output_dir"] != base["output_dir"]
    if mode == "server":
        # the server takes these as its own flags; in the YAML they would be ignored
        assert "vllm_gpu_memory_utilization" not in recipe
        assert "vllm_tensor_parallel_size" not in recipe
        assert recipe["vllm_server_port"] == 8000
    else:
        assert 0 < recipe["vllm_gpu_memory_utilization"] < 1
        for n in _PROCESS_COUNTS[mode]:
            assert n % recipe["vllm_tensor_parallel_size"] == 0
    # GRPO needs each generation round to hold whole groups of num_generations completions
    for n in _PROCESS_COUNTS[mode]:
        per_round = (
            recipe["per_device_train_batch_size"] * n * recipe["gradient_accumulation_steps"]
        )
        assert per_round % recipe["num_generations"] == 0, (mode, n)


# ---------------------------------------------------------------------------------------------
# accelerate YAMLs


def _launch_parser():
    from accelerate.commands.launch import launch_command_parser

    return launch_command_parser()


@pytest.mark.parametrize("path", ACCELERATE_YAMLS, ids=lambda p: p.name)
def test_accelerate_yaml_loads_and_validates(path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command

    cfg = load_config_from_file(str(path))  # raises on unknown top-level keys
    assert isinstance(cfg, ClusterConfig)
    assert cfg.num_processes >= 2 and cfg.num_processes % cfg.num_machines == 0
    assert cfg.mixed_precision == "bf16"
    # nested keys are copied onto `accelerate launch`'s arguments without a check of their own:
    # each must be one of its options (fsdp_config keys with the fsdp_ prefix)
    parser = _launch_parser()
    dests = {a.dest for a in parser._actions}
    for key in cfg.deepspeed_config or {}:
        assert key in dests, f"{path.name}: deepspeed_config.{key} is no accelerate launch option"
    for key in cfg.fsdp_config or {}:
        name = key if key.startswith("fsdp") else f"fsdp_{key}"
        assert name in dests, f"{path.name}: fsdp_config.{key} is no accelerate launch option"
    # what `accelerate launch --config_file X -m tag_train.cli ...` does with it before starting
    args = parser.parse_args(["--config_file", str(path), "-m", "tag_train.cli", "rl"])
    _validate_launch_command(args)
    assert args.num_processes == cfg.num_processes


def test_fsdp_yamls():
    from accelerate.commands.config.config_args import load_config_from_file

    for version in (1, 2):
        cfg = load_config_from_file(str(CONFIGS / "accelerate" / f"fsdp{version}.yaml"))
        fsdp = cfg.fsdp_config
        assert cfg.distributed_type == "FSDP" and fsdp["fsdp_version"] == version
        # a plain HF checkpoint at the end (rl, vllm-serve and tag-eval load it)
        assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
        # the training YAMLs checkpoint activations in the Trainer; transformers refuses both
        assert fsdp["fsdp_activation_checkpointing"] is False
    fsdp1 = load_config_from_file(str(CONFIGS / "accelerate" / "fsdp1.yaml")).fsdp_config
    assert fsdp1["fsdp_use_orig_params"] is True  # frozen vision encoder next to trained layers


def test_multi_node_yaml_marks_its_placeholders():
    from accelerate.commands.config.config_args import load_config_from_file

    path = CONFIGS / "accelerate" / "multi_node_zero3.yaml"
    cfg = load_config_from_file(str(path))
    assert cfg.num_machines == 2 and cfg.num_processes == 16
    assert cfg.deepspeed_config["zero_stage"] == 3
    assert "PLACEHOLDER" in cfg.main_process_ip
    lines = {line.split(":")[0]: line for line in path.read_text().splitlines() if ":" in line}
    for key in ("machine_rank", "main_process_ip"):
        assert "PLACEHOLDER" in lines[key], key


# ---------------------------------------------------------------------------------------------
# docs/real-run.md: every command parses, every named config ships


def _doc_commands(text: str | None = None) -> list[str]:
    text = REAL_RUN.read_text() if text is None else text
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    return commands


def _argv(command: str) -> list[str]:
    """The command's argv: comments dropped, leading VAR=value assignments dropped,
    ``$CFG`` -> the package's configs folder, other ``$VARS`` -> a placeholder."""
    command = command.replace("$CFG", str(CONFIGS))
    command = re.sub(r"\$\{?[A-Z_][A-Z0-9_]*\}?", "placeholder", command)
    argv = shlex.split(command, comments=True)
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):
        argv.pop(0)
    return argv


def _check_config_path(path: str, command: str) -> None:
    p = Path(path)
    assert p.is_file(), f"{command!r}: no such config {path}"
    assert CONFIGS.resolve() in p.resolve().parents, f"{command!r}: {path} is not a shipped config"


def _check_tag_train(argv: list[str], command: str) -> None:
    from tag_train._args import RLScriptArguments, SFTScriptArguments, TracesArguments
    from trl import GRPOConfig, SFTConfig, TrlParser

    sub, rest = argv[1], argv[2:]
    assert "--config" in rest, f"{command!r}: no --config"
    _check_config_path(rest[rest.index("--config") + 1], command)
    classes = {
        "traces": (TracesArguments,),
        "sft": (SFTScriptArguments, SFTConfig),
        "rl": (RLScriptArguments, GRPOConfig),
    }[sub]
    if sub != "traces":
        rest = _cpu_overrides(rest)
    try:
        TrlParser(classes).parse_args_and_config(rest)
    except SystemExit as exc:
        pytest.fail(f"tag-train {sub} refuses {command!r} (exit {exc.code})")


def _check_command(command: str) -> str | None:
    argv = _argv(command)
    tool = argv[0]
    if tool == "tag-train":
        _check_tag_train(argv, command)
    elif tool == "accelerate":
        from accelerate.commands.launch import _validate_launch_command

        assert argv[1] == "launch", command
        try:
            args = _launch_parser().parse_args(argv[2:])
        except SystemExit as exc:
            pytest.fail(f"accelerate launch refuses {command!r} (exit {exc.code})")
        _check_config_path(args.config_file, command)
        _validate_launch_command(args)
        assert args.module and args.training_script == "tag_train.cli", command
        _check_tag_train(["tag-train", *args.training_script_args], command)
    elif tool == "trl":
        from trl.scripts.vllm_serve import make_parser

        assert argv[1] == "vllm-serve", command
        try:
            (serve, rest) = make_parser().parse_args_and_config(
                argv[2:], return_remaining_strings=True
            )
        except SystemExit as exc:
            pytest.fail(f"trl vllm-serve refuses {command!r} (exit {exc.code})")
        # leftovers would go to `vllm serve` unchecked: the page uses TRL's own flags only
        assert not rest, f"{command!r}: not trl vllm-serve flags: {rest}"
        assert serve.model.startswith("runs/sft-"), command
    elif tool == "tag-eval":
        from tag_eval.cli import build_parser

        try:
            build_parser().parse_args(argv[1:])
        except SystemExit as exc:
            pytest.fail(f"tag-eval refuses {command!r} (exit {exc.code})")
    else:
        return None  # setup lines (uv, source, export)
    return tool


def test_real_run_commands_parse():
    commands = _doc_commands()
    checked = [tool for c in commands if (tool := _check_command(c))]
    # all four layouts: traces, sft, rl, eval, launchers and the vLLM server
    assert checked.count("tag-train") >= 3, checked
    assert checked.count("accelerate") >= 9, checked
    assert checked.count("trl") >= 2, checked
    assert checked.count("tag-eval") >= 4, checked


def test_readme_real_run_section_commands_parse():
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## A real run\n", 1)[1].split("\n## ", 1)[0]
    checked = [tool for c in _doc_commands(section) if (tool := _check_command(c))]
    # one GPU (traces, sft, rl, eval), 8 GPUs with a vLLM server, two nodes
    assert checked == ["tag-train"] * 3 + ["tag-eval", "trl"] + ["accelerate"] * 3, checked
    assert "(docs/real-run.md)" in section


def test_real_run_names_only_shipped_configs():
    text = REAL_RUN.read_text()
    # `$CFG/...` paths, and config names in backticks (`fsdp1.yaml`, `accelerate/x.yaml`)
    named = set(re.findall(r"\$CFG/([\w./-]+\.(?:ya?ml|json))", text))
    named |= set(re.findall(r"`([\w./-]+\.(?:ya?ml|json))`", text))
    assert len(named) >= 8, named
    for name in sorted(named):
        candidates = [CONFIGS / name, CONFIGS / "accelerate" / name]
        assert any(c.is_file() for c in candidates), f"docs/real-run.md names {name}: not shipped"
