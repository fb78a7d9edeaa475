"""``tag-train``: build TAG traces, then SFT and GRPO a VLM on them.

Subcommands (each accepts ``--config file.yaml``; flags on the command line override it):

* ``tag-train pretrain``: the seeded two-stage pretraining of a nano base model (``tag-nano``
  is ``--preset nano``; ``--preset smoke`` runs the path in seconds).
* ``tag-train traces``: TAG-310K-style trace dataset (teacher + rejection sampling).
* ``tag-train sft``: TRL ``SFTTrainer`` on a trace dataset (every ``SFTConfig`` flag works).
* ``tag-train distill``: a small Flax NNX student (emotion, AU probabilities, AU boxes in one
  forward pass) trained on a trace dataset (``tag_train.student``).
* ``tag-train rl``: TRL ``GRPOTrainer`` with format, answer and AU-grounding rewards (every
  ``GRPOConfig`` flag works). With no arguments, or with ``--preset smoke|default`` (and only
  the demo's own flags), it runs the built-in CPU demo; any other call needs
  ``--dataset_path``.

Expected failures (a missing path, a malformed dataset, a missing model, a bad config key, an
unknown family) print one line on stderr and exit with a status that says which kind
(:data:`EXIT_CODES`); ``--debug`` prints the traceback as well.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

__all__ = ["EXIT_CODES", "main"]

#: Exit status of each kind of failure.
EXIT_CODES = {
    "ok": 0,
    "usage": 2,  # bad flag, config key or value, unknown family
    "model": 3,  # missing model or checkpoint
    "dataset": 4,  # missing or malformed dataset, missing images
}

_EXIT_HELP = """\
exit status:
  0  success
  2  bad input or usage: an unknown flag or config key, a bad value, an unknown backbone
     family, `tag-train rl` without --dataset_path (the demo: no arguments, or --preset)
  3  the model or checkpoint is missing or cannot be loaded
  4  dataset error: a missing --dataset_path / --data_root / label file, a malformed line
     (file and line named), missing images (`tag-train traces --skip_missing` skips them)
  5  `tag-train traces`: the teacher failed (outage or faces left in teacher_error);
     everything finished is kept, rerun the same command to resume
Each prints one line on stderr; --debug adds the traceback.
"""

_EPILOG = """\
examples:
  tag-train traces --dataset rafdb --data_root data/RAF-DB --output_dir runs/traces-rafdb \\
      --teacher openai --base_url http://localhost:8000/v1 --teacher_model Qwen/Qwen2.5-VL-72B-Instruct
  tag-train sft --config configs/sft_qwen2_5_vl_3b_rafdb.yaml
  tag-train rl  --config configs/grpo_qwen2_5_vl_3b_rafdb.yaml --learning_rate 5e-7
  tag-train rl                   # built-in demo (CPU, <= 15 min), writes runs/demo-<timestamp>/
  tag-train rl --preset smoke    # the same path in <= 2 min
  tag-train rl --labels happiness,sadness,surprise,anger   # the demo on 4 of RAF-DB's 7 classes
  tag-train pretrain             # rebuild the shipped tag-nano base (about 50 min on 2 cores)

`tag-train <command> --help` lists every option of a command. Example YAML configs ship in
the package: python -c "import tag_train, pathlib; print(pathlib.Path(tag_train.__file__).parent / 'configs')"

"""
_EPILOG += _EXIT_HELP


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, epilog (the exit statuses) kept as written."""


class _UsageError(Exception):
    """A command-line usage error (exit status 2)."""


def _pretrain(argv: list[str]) -> int:
    from tag_train.pretrain import main as pretrain_main

    return pretrain_main(argv)


def _traces(argv: list[str]) -> int:
    if argv and argv[0] == "combine":
        return _traces_combine(argv[1:])
    from trl import TrlParser

    from tag_train._args import TracesArguments

    parser = TrlParser(
        (TracesArguments,),
        prog="tag-train traces",
        description=_TRACES_HELP,
        epilog=_EXIT_HELP,
        formatter_class=_Formatter,
    )
    (args,) = parser.parse_args_and_config(argv)
    from tag_train.traces import TeacherOutageError
    from tag_train.traces._cli import run_traces

    try:
        summary = run_traces(args)
    except TeacherOutageError as exc:  # records kept: the same command resumes
        print(f"tag-train traces: teacher outage: {exc}", file=sys.stderr)
        return 5
    print(summary.as_text())
    if not summary.complete:
        print(
            f"tag-train traces: {summary.teacher_error} face(s) got teacher errors and "
            f"{summary.not_built} were not built; rerun the same command to finish them "
            "(no --overwrite)",
            file=sys.stderr,
        )
        return 5
    return 0


def _traces_combine(argv: list[str]) -> int:
    """``tag-train traces combine OUT SHARD_DIR...``: join ``--shard I/N`` builds."""
    parser = argparse.ArgumentParser(
        prog="tag-train traces combine",
        description="Check shard builds (same dataset and settings, every row finished once) "
        "and join them into one trace dataset in dataset order, with a combined summary.",
    )
    parser.add_argument("output_dir", help="where the combined dataset is saved")
    parser.add_argument("shard_dirs", nargs="+", help="the --output_dir of each shard build")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    ns = parser.parse_args(argv)
    from tag_train.traces import combine_shards

    summary = combine_shards(ns.output_dir, ns.shard_dirs, overwrite=ns.overwrite)
    print(summary.as_text())
    return 0


def _sft(argv: list[str]) -> int:
    from trl import SFTConfig, TrlParser

    from tag_train._args import SFTScriptArguments

    parser = TrlParser(
        (SFTScriptArguments, SFTConfig),
        prog="tag-train sft",
        description=_SFT_HELP,
        epilog=_EXIT_HELP,
        formatter_class=_Formatter,
    )
    script_args, training_args = parser.parse_args_and_config(_cpu_defaults(argv, "sft"))
    from tag_train.sft import run_sft

    run_sft(script_args, training_args)
    return 0


def _rl(argv: list[str]) -> int:
    if not argv or _only_demo_flags(argv):
        from tag_train.demo import main as demo_main

        return demo_main(argv)
    _check_demo_flags(argv)
    from trl import GRPOConfig, TrlParser

    from tag_train._args import RLScriptArguments

    parser = TrlParser(
        (RLScriptArguments, GRPOConfig),
        prog="tag-train rl",
        description=_RL_HELP,
        epilog=_EXIT_HELP,
        formatter_class=_Formatter,
    )
    script_args, training_args = parser.parse_args_and_config(_cpu_defaults(argv, "rl"))
    if script_args.preset:  # from a --config file: the demo ignores every training option
        raise _UsageError(
            "preset: runs the built-in demo, which takes no training options; give it alone "
            "on the command line (tag-train rl --preset smoke|default), or drop it to train"
        )
    if not script_args.dataset_path:
        raise _UsageError(
            "tag-train rl needs --dataset_path (a trace dataset from `tag-train traces`) to "
            "train; for the built-in demo give no arguments at all, or --preset smoke|default"
        )
    from tag_train.rl import run_rl

    run_rl(script_args, training_args)
    return 0


def _cpu_defaults(argv: list[str], command: str) -> list[str]:
    """``argv`` with ``--bf16 false`` appended on a machine without CUDA, unless the command
    line sets ``--bf16`` itself.

    TRL's configs default to ``bf16=True`` (and the shipped YAML configs say so for the GPUs
    they target); ``TrainingArguments`` rejects that without a GPU while it parses, before
    any TAG code runs. So the same command trains on a CPU machine, in float32. An explicit
    ``--bf16 true`` is left alone (and fails there, as asked).
    """
    if "-h" in argv or "--help" in argv:
        return argv
    if any(a == "--bf16" or a.startswith("--bf16=") for a in argv):
        return argv
    import torch

    if torch.cuda.is_available():
        return argv
    print(f"tag-train {command}: no CUDA device, training in float32")
    return [*argv, "--bf16", "false"]


def _merge(argv: list[str]) -> int:
    from trl import TrlParser

    from tag_train.merge import MERGE_HELP, MergeArguments, run_merge

    parser = TrlParser((MergeArguments,), prog="tag-train merge", description=MERGE_HELP)
    (args,) = parser.parse_args_and_config(argv)
    print(run_merge(args).as_text())
    return 0


def _distill(argv: list[str]) -> int:
    from tag_train.student._cli import distill_main

    return distill_main(argv, epilog=_EXIT_HELP, formatter_class=_Formatter)


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


_DEMO_FLAGS = (
    "--preset",
    "--run_dir",
    "--cache_dir",
    "--no_cache",
    "--seed",
    "--labels",
    "--base",
    "--verbose",
)


def _flags(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if a.startswith("--") or a == "-h"]


def _only_demo_flags(argv: list[str]) -> bool:
    """``tag-train rl --preset smoke [--run_dir D] [--cache_dir C] [--no_cache] [--seed S]``:
    ``--preset`` and only the demo's own flags -> the demo. Without ``--preset`` the demo's
    flags mean nothing to a training run, so they are no demo call either."""
    if "--help" in argv or "-h" in argv or "--config" in argv:
        return False
    flags = _flags(argv)
    return "--preset" in flags and all(f in _DEMO_FLAGS for f in flags)


def _check_demo_flags(argv: list[str]) -> None:
    """``--preset`` with a training option is an error: the demo would ignore the option; the
    demo's own flags without ``--preset`` are a training call without ``--dataset_path``."""
    flags = _flags(argv)
    if "--help" in flags or "-h" in flags or "--config" in flags:
        return
    if "--preset" not in flags and all(f in _DEMO_FLAGS for f in flags):
        raise _UsageError(
            "tag-train rl needs --dataset_path (a trace dataset from `tag-train traces`) to "
            f"train; the demo's flags ({', '.join(_DEMO_FLAGS[1:])}) go with --preset "
            "smoke|default"
        )
    if "--preset" in flags:
        others = sorted({f for f in flags if f not in _DEMO_FLAGS})
        raise _UsageError(
            f"--preset runs the built-in demo, which takes only {', '.join(_DEMO_FLAGS[1:])}; "
            f"got {', '.join(others)} (to train, drop --preset and give --dataset_path)"
        )


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
    sub = parser.add_subparsers(
        dest="command", metavar="{pretrain,traces,sft,rl,merge,export,distill}"
    )
    sub.add_parser(
        "pretrain",
        help="pretrain a nano base model (vision stage, then grounding questions)",
        add_help=False,
    )
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
    sub.add_parser(
        "distill",
        help="a small Flax student (emotion, AUs, boxes in one pass) from traces",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tag-train`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    args, debug = _pop_debug(args)
    parser = _build_parser()
    if not args or args[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if args else 2
    command, rest = args[0], args[1:]
    handlers = {
        "pretrain": _pretrain,
        "traces": _traces,
        "sft": _sft,
        "rl": _rl,
        "merge": _merge,
        "export": _export,
        "distill": _distill,
    }
    if command not in handlers:
        print(
            f"tag-train: error: unknown command {command!r}; choose from {', '.join(handlers)}",
            file=sys.stderr,
        )
        return EXIT_CODES["usage"]
    try:
        _check_config(rest)
        return handlers[command](rest)
    except Exception as exc:
        kind = _classify(exc)
        if kind is None:  # not an expected failure: a bug, shown in full
            raise
        code, label, message = kind
        if debug:
            traceback.print_exc()
        print(f"tag-train {command}: {label}: {message}", file=sys.stderr)
        return code


def _pop_debug(args: list[str]) -> tuple[list[str], bool]:
    """Remove ``--debug`` (ours: show tracebacks). ``--debug VALUE`` is TrainingArguments'
    own ``debug`` option and stays."""
    out, debug = [], False
    for i, a in enumerate(args):
        nxt = args[i + 1] if i + 1 < len(args) else None
        if a == "--debug" and (nxt is None or nxt.startswith("-")):
            debug = True
            continue
        out.append(a)
    return out, debug


def _check_config(argv: list[str]) -> None:
    """A ``--config`` file that does not exist is a usage error, named."""
    from pathlib import Path

    for i, a in enumerate(argv):
        path = None
        if a == "--config":
            if i + 1 >= len(argv):
                raise _UsageError("--config needs a YAML file")
            path = argv[i + 1]
        elif a.startswith("--config="):
            path = a.split("=", 1)[1]
        if path is not None and not Path(path).is_file():
            raise _UsageError(f"config file not found: {path}")


def _one_line(exc: BaseException) -> str:
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] + (" (--debug shows more)" if len(lines) > 1 else "")


def _in_training_loop(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside ``Trainer.train``: shown in full, never one line."""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.name in ("_inner_training_loop", "training_step") and "transformers" in (
            frame.filename
        ):
            return True
    return False


def _classify(exc: BaseException) -> tuple[int, str, str] | None:
    """``(exit status, label, one-line message)`` of an expected failure; ``None`` for a bug."""
    from tag_model.backbones import BackboneNotFoundError, UnknownFamilyError
    from tag_model.datasets import DatasetFormatError, DatasetImageError

    if _in_training_loop(exc):  # a failure after training started is no input problem
        return None
    msg = _one_line(exc)
    if isinstance(exc, _UsageError):
        return EXIT_CODES["usage"], "error", msg
    if isinstance(exc, BackboneNotFoundError):
        return EXIT_CODES["model"], "error", msg
    if isinstance(exc, UnknownFamilyError):
        return EXIT_CODES["usage"], "error", msg
    if isinstance(exc, DatasetFormatError):
        return EXIT_CODES["dataset"], "dataset error", msg
    if isinstance(exc, DatasetImageError):
        return EXIT_CODES["dataset"], "dataset error", f"{msg} (--skip_missing skips them)"
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return EXIT_CODES["dataset"], "error", msg
    if isinstance(exc, ValueError):  # bad values and config keys (TrlParser, TAG's checks)
        return EXIT_CODES["usage"], "error", msg
    return None


if __name__ == "__main__":
    sys.exit(main())
