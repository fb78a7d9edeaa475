"""``tag-train``: build TAG traces, then SFT and GRPO a VLM on them.

Subcommands (each accepts ``--config file.yaml``; flags on the command line override it):

* ``tag-train traces``: TAG-310K-style trace dataset (teacher + rejection sampling).
* ``tag-train sft``: TRL ``SFTTrainer`` on a trace dataset (every ``SFTConfig`` flag works).
* ``tag-train rl``: TRL ``GRPOTrainer`` with format, answer and AU-grounding rewards (every
  ``GRPOConfig`` flag works). With no arguments, or with ``--preset smoke|default``, it runs
  the built-in CPU demo.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]

_EPILOG = """\
examples:
  tag-train traces --dataset rafdb --data_root data/RAF-DB --output_dir runs/traces-rafdb \\
      --teacher openai --base_url http://localhost:8000/v1 --teacher_model Qwen/Qwen2.5-VL-72B-Instruct
  tag-train sft --config configs/sft_qwen2_5_vl_3b_rafdb.yaml
  tag-train rl  --config configs/grpo_qwen2_5_vl_3b_rafdb.yaml --learning_rate 5e-7
  tag-train rl                   # built-in demo (CPU, <= 15 min), writes runs/demo-<timestamp>/
  tag-train rl --preset smoke    # the same path in <= 2 min

`tag-train <command> --help` lists every option of a command. Example YAML configs ship in
the package: python -c "import tag_train, pathlib; print(pathlib.Path(tag_train.__file__).parent / 'configs')"
"""


def _traces(argv: list[str]) -> int:
    from trl import TrlParser

    from tag_train._args import TracesArguments

    parser = TrlParser((TracesArguments,), prog="tag-train traces", description=_TRACES_HELP)
    (args,) = parser.parse_args_and_config(argv)
    from tag_train.traces._cli import run_traces

    summary = run_traces(args)
    print(summary.as_text())
    return 0


def _sft(argv: list[str]) -> int:
    from trl import SFTConfig, TrlParser

    from tag_train._args import SFTScriptArguments

    parser = TrlParser((SFTScriptArguments, SFTConfig), prog="tag-train sft", description=_SFT_HELP)
    script_args, training_args = parser.parse_args_and_config(argv)
    from tag_train.sft import run_sft

    run_sft(script_args, training_args)
    return 0


def _rl(argv: list[str]) -> int:
    if not argv or _only_demo_flags(argv):
        from tag_train.demo import main as demo_main

        return demo_main(argv)
    from trl import GRPOConfig, TrlParser

    from tag_train._args import RLScriptArguments

    parser = TrlParser((RLScriptArguments, GRPOConfig), prog="tag-train rl", description=_RL_HELP)
    script_args, training_args = parser.parse_args_and_config(argv)
    if script_args.preset or not script_args.dataset_path:
        from tag_train.demo import main as demo_main

        return demo_main(["--preset", script_args.preset or "default"])
    from tag_train.rl import run_rl

    run_rl(script_args, training_args)
    return 0


def _export(argv: list[str]) -> int:
    from trl import TrlParser

    from tag_train.export import ExportArguments, export_dataset

    parser = TrlParser((ExportArguments,), prog="tag-train export", description=_EXPORT_HELP)
    (args,) = parser.parse_args_and_config(argv)
    print(export_dataset(args).as_text())
    return 0


_EXPORT_HELP = (
    "Write a trace dataset as verl (parquet), EasyR1 (parquet) or OpenRLHF (jsonl + PNGs) GRPO "
    "data; each row carries TAG's ground_truth JSON for tag_train.integrations' reward "
    "functions (docs/integrations.md)."
)


def _merge(argv: list[str]) -> int:
    from trl import TrlParser

    from tag_train.merge import MERGE_HELP, MergeArguments, run_merge

    parser = TrlParser((MergeArguments,), prog="tag-train merge", description=MERGE_HELP)
    (args,) = parser.parse_args_and_config(argv)
    print(run_merge(args).as_text())
    return 0


_DEMO_FLAGS = ("--preset", "--run_dir", "--cache_dir", "--no_cache", "--seed")


def _only_demo_flags(argv: list[str]) -> bool:
    """``tag-train rl [--preset smoke] [--run_dir D] ...``: only demo flags -> the demo."""
    if "--help" in argv or "-h" in argv or "--config" in argv:
        return False
    flags = [a.split("=", 1)[0] for a in argv if a.startswith("--")]
    return bool(flags) and all(f in _DEMO_FLAGS for f in flags)


_TRACES_HELP = (
    "Build a TAG-310K-style trace dataset: quality filter -> landmarks -> AU detector -> "
    "activated list -> teacher -> rejection sampling (format must parse, answer must equal the "
    "label; wrong answers are retried with label elimination). Resumable: rerun the same "
    "command after a crash. Output: a Hugging Face dataset (load_from_disk(output_dir))."
)
_SFT_HELP = (
    "Supervised fine-tuning on a trace dataset with TRL's SFTTrainer. The language model and "
    "projector train, the vision encoder is frozen (the backbone adapter's policy); --use_peft "
    "trains LoRA adapters instead. Checkpoints every --save_steps; --resume continues from "
    "the last one in --output_dir. Every trl.SFTConfig option is accepted."
)
_RL_HELP = (
    "GRPO with TRL's GRPOTrainer and TAG's three rewards (format, answer, AU grounding); "
    "weights via --reward_weights F A G. vLLM rollouts: --use_vllm (--vllm_mode colocate|server); "
    "multi-GPU: launch with `accelerate launch --config_file ... -m tag_train.cli rl ...`. "
    "--resume continues from the last checkpoint. Every trl.GRPOConfig option is accepted. "
    "With no arguments (or --preset smoke|default) runs the built-in CPU demo."
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tag-train",
        description=(
            "TAG training pipeline: AU-grounded reasoning traces, SFT and GRPO for facial "
            "expression recognition VLMs (arXiv 2602.18763)."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="{traces,sft,rl,merge,export}")
    sub.add_parser(
        "traces", help="build a trace dataset (teacher + rejection sampling)", add_help=False
    )
    sub.add_parser("sft", help="supervised fine-tuning on traces (TRL SFTTrainer)", add_help=False)
    sub.add_parser(
        "rl",
        help="GRPO with format/answer/grounding rewards; no arguments: the demo",
        add_help=False,
    )
    sub.add_parser(
        "merge", help="fold a LoRA adapter into its base: a full checkpoint", add_help=False
    )
    sub.add_parser(
        "export", help="a trace dataset as verl / EasyR1 / OpenRLHF data", add_help=False
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tag-train`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    if not args or args[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if args else 2
    command, rest = args[0], args[1:]
    handlers = {"traces": _traces, "sft": _sft, "rl": _rl, "merge": _merge, "export": _export}
    if command not in handlers:
        parser.error(f"unknown command {command!r}; choose from traces, sft, rl")
    return handlers[command](rest)


if __name__ == "__main__":
    sys.exit(main())
