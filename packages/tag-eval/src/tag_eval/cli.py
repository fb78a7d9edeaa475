"""The ``tag-eval`` console script: ``run``, ``compare`` and ``report``.

Each subcommand's flags are the fields of a dataclass parsed by
:class:`transformers.HfArgumentParser`, as in ``tag-train`` (whose ``trl.TrlParser`` is the same
parser): ``--config file.yaml`` gives defaults under the same names, flags on the command line
override it, and the names match ``tag-train``'s for the same things (``--data_root``,
``--prompt_style``, ``--label_space``, ``--output_dir``, ``--per_device_eval_batch_size``,
``--skip_missing``). Dashed spellings (``--data-root``) work too.

Expected failures print one line on stderr and exit with a status that says which kind
(:data:`EXIT_CODES`); ``--debug`` prints the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

__all__ = ["EXIT_CODES", "CompareArguments", "ReportArguments", "build_parser", "main"]

#: Exit status of each kind of failure.
EXIT_CODES = {
    "ok": 0,
    "usage": 2,  # bad flag, config key, value, run directory, unknown family
    "model": 3,  # missing model or checkpoint
    "dataset": 4,  # missing root, malformed label file, missing images, empty split
    "endpoint": 5,  # a judge or --engine openai endpoint failed after its retries
}

_EXIT_HELP = """\
exit status:
  0  success
  2  bad input or usage: an unknown flag or config key, a bad value or run directory,
     an unknown backbone family
  3  the model or checkpoint is missing or cannot be loaded
  4  dataset error: missing root, malformed label file (file and line named), missing
     images (--skip_missing skips them), empty split
  5  an OpenAI-compatible endpoint (judge, --engine openai) failed after its retries
Each prints one line on stderr; --debug adds the traceback.
"""

_DESCRIPTION = """\
Evaluate TAG models and base VLMs in one harness.

  tag-eval run      generate on a FER dataset; writes accuracy, macro-F1, a confusion
                    matrix, AU-grounding faithfulness (grounding F-score, AU precision and
                    recall, hallucination rate, EMFACS consistency, with bootstrap CIs), the
                    parse failures, and a per-sample JSONL into --output_dir. Interrupted runs
                    resume. Engines: transformers, vllm, openai (any OpenAI-compatible API).
  tag-eval compare  preference study of two runs on the same images: an LLM judge over any
                    OpenAI-compatible endpoint (each pair judged twice, positions swapped)
                    and/or an HTML + CSV export for a human study (--export_human), scored
                    back with --import_answers.
  tag-eval report   one self-contained HTML report for one or more runs.

Run `tag-eval <command> --help` for the options of each command; every command also takes
--config file.yaml (keys = option names) and --debug.
"""

_EPILOG = (
    """\
examples:
  tag-eval run --model_name_or_path ./ckpt --dataset rafdb --data_root data/RAF-DB \\
      --split test --output_dir runs/tag
  tag-eval run --model_name_or_path Qwen/Qwen2.5-VL-3B-Instruct --prompt_style zeroshot \\
      --dataset rafdb --data_root data/RAF-DB --output_dir runs/base
  OPENAI_API_KEY=... tag-eval run --engine openai --base_url https://api.openai.com/v1 \\
      --model gpt-4o --dataset rafdb --data_root data/RAF-DB --output_dir runs/gpt4o
  TAG_JUDGE_API_KEY=... tag-eval compare runs/tag runs/base \\
      --judge_url http://localhost:8000/v1 --judge_model Qwen/Qwen2.5-VL-72B-Instruct \\
      --output_dir runs/compare
  tag-eval compare runs/tag runs/base --export_human --output_dir runs/human
  tag-eval compare --import_answers filled_sheet.csv --key runs/human/human_key.json \\
      --output_dir runs/human
  tag-eval report runs/tag runs/base --compare runs/compare runs/human --out report.html

"""
    + _EXIT_HELP
)


@dataclass
class CompareArguments:
    """Flags of ``tag-eval compare`` (besides the two run folders, ``RUN_A RUN_B``)."""

    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Output folder (default: RUN_A/compare-<RUN_B name>).",
            "aliases": ["--out"],
        },
    )
    judge_url: str | None = field(
        default=None,
        metadata={"help": "OpenAI-compatible API root of the judge, e.g. http://host:8000/v1."},
    )
    judge_model: str | None = field(default=None, metadata={"help": "Judge model name."})
    judge_api_key_env: str = field(
        default="TAG_JUDGE_API_KEY",
        metadata={"help": "NAME of the environment variable holding the key (never logged)."},
    )
    judge_timeout: float = field(default=60.0, metadata={"help": "Seconds per judge request."})
    judge_retries: int = field(default=3, metadata={"help": "Retries per judge request."})
    judge_backoff: float = field(default=1.0, metadata={"help": "Base backoff in seconds."})
    judge_images: bool = field(
        default=True,
        metadata={"help": "Send the image with the traces (--no_judge_images: traces only)."},
    )
    export_human: bool = field(
        default=False,
        metadata={"help": "Write human_study.html, answer_sheet.csv and human_key.json."},
    )
    import_answers: list[str] | None = field(
        default=None,
        metadata={"help": "Score these filled answer sheets (CSV) instead of comparing runs."},
    )
    key: str | None = field(
        default=None, metadata={"help": "human_key.json (default: beside the first sheet)."}
    )
    limit: int | None = field(default=None, metadata={"help": "Compare at most N images."})
    seed: int = field(default=0, metadata={"help": "Seed of the A/B order."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})


@dataclass
class ReportArguments:
    """Flags of ``tag-eval report`` (besides the run folders, ``RUN...``)."""

    out: str = field(default="report.html", metadata={"help": "The HTML file to write."})
    title: str = field(default="TAG evaluation report", metadata={"help": "Page title."})
    gallery_size: int = field(default=12, metadata={"help": "Cards per run in the gallery."})
    seed: int = field(default=0, metadata={"help": "Seed of the gallery's sample."})
    compare: list[str] = field(
        default_factory=list,
        metadata={"help": "tag-eval compare output folders to include (judge and human results)."},
    )


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class _Parser(HfArgumentParser):
    """:class:`HfArgumentParser` with ``--config file.yaml`` (as ``trl.TrlParser``) and
    one-line usage errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message} (see {self.prog} --help)")

    def parse_args_and_config(self, argv: list[str]) -> tuple[Any, ...]:
        """The dataclasses, then a namespace of the positional arguments (if any)."""
        import yaml

        from tag_eval._records import EvalInputError

        args = list(argv)
        for i, a in enumerate(args):
            if a == "--config" or a.startswith("--config="):
                if a == "--config":
                    if i + 1 >= len(args):
                        raise _UsageError(f"--config needs a YAML file (see {self.prog} --help)")
                    path = args[i + 1]
                    del args[i : i + 2]
                else:
                    path = a.split("=", 1)[1]
                    del args[i]
                break
        else:
            path = None
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise EvalInputError(f"config file not found: {p}")
            try:
                config = yaml.safe_load(p.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                where = getattr(exc, "problem_mark", None)
                line = f", line {where.line + 1}" if where is not None else ""
                raise EvalInputError(f"{p}{line}: not valid YAML: {exc}") from exc
            if config is None:
                config = {}
            if not isinstance(config, dict):
                raise EvalInputError(f"{p}: a config file must be a YAML mapping of option names")
            dests = {a.dest: a for a in self._actions}
            unknown = sorted(str(k) for k in config if k not in dests or k == "help")
            if unknown:
                raise EvalInputError(
                    f"{p}: unknown key(s) {', '.join(unknown)}; the keys are the option "
                    f"names of `{self.prog} --help`"
                )
            for k, v in config.items():
                dests[k].default = v
                dests[k].required = False
        *parsed, remaining = self.parse_args_into_dataclasses(
            args=args, return_remaining_strings=True, look_for_args_file=False
        )
        if remaining:
            raise _UsageError(
                f"unrecognized arguments: {' '.join(remaining)} (see {self.prog} --help)"
            )
        return tuple(parsed)


class _UsageError(Exception):
    """A command-line usage error (exit status 2)."""


def _parser(dtype: Any, prog: str, description: str) -> _Parser:
    return _Parser(
        (dtype,),
        prog=prog,
        description=description,
        epilog=_EXIT_HELP,
        formatter_class=_Formatter,
    )


def _run_parser() -> _Parser:
    from tag_eval.run import RunConfig

    return _parser(
        RunConfig,
        "tag-eval run",
        "Generate, parse and score a model on a FER dataset (resumable). Engines: "
        "transformers and vllm on a checkpoint folder or hub id, openai on any "
        "OpenAI-compatible endpoint (--base_url, --model = the served name, --api_key_env).",
    )


def _compare_parser() -> _Parser:
    parser = _parser(
        CompareArguments,
        "tag-eval compare",
        "Compare two runs' traces on the same images: RUN_A RUN_B, then options.",
    )
    parser.add_argument("runs", nargs="*", metavar="RUN", help="RUN_A RUN_B")
    return parser


def _report_parser() -> _Parser:
    parser = _parser(
        ReportArguments, "tag-eval report", "Render one HTML report for one or more runs."
    )
    parser.add_argument("runs", nargs="*", metavar="RUN", help="run folders")
    return parser


_PARSERS = {"run": _run_parser, "compare": _compare_parser, "report": _report_parser}


class _CommandParser(argparse.ArgumentParser):
    """The whole command line (``run|compare|report ...``) parsed as :func:`main` parses it,
    without running anything: for tools that check commands (the docs' tests)."""

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        from tag_eval._records import EvalInputError

        argv = list(sys.argv[1:] if args is None else args)
        if not argv or argv[0] not in _PARSERS:
            self.error(f"expected a command ({', '.join(_PARSERS)}), got {argv[:1]}")
        try:
            parsed = _PARSERS[argv[0]]().parse_args_and_config(argv[1:])
        except (_UsageError, EvalInputError) as exc:
            self.error(str(exc))
        return argparse.Namespace(command=argv[0], args=parsed[0], runs=_runs(parsed))


def build_parser() -> argparse.ArgumentParser:
    """A parser whose ``parse_args`` checks a whole ``tag-eval`` command line (``SystemExit``
    2 on a bad one) and returns ``Namespace(command, args, runs)``."""
    return _CommandParser(prog="tag-eval", description=_DESCRIPTION, epilog=_EPILOG)


def _runs(parsed: tuple[Any, ...]) -> list[str]:
    return list(getattr(parsed[1], "runs", None) or []) if len(parsed) > 1 else []


def _cmd_run(argv: list[str]) -> int:
    from tag_eval.run import run_eval

    (cfg,) = _run_parser().parse_args_and_config(argv)
    m = run_eval(cfg, progress=cfg.progress)
    cls, f, parse = m["classification"], m["faithfulness"], m["parse"]

    def num(x: Any) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    print(f"run: {cfg.out_dir()}")
    print(f"accuracy {num(cls['accuracy'])}  macro-F1 {num(cls['macro_f1'])}  n={cls['n']}")
    g = f["grounding_f"]
    if g["mean"] is not None and g["low"] is None:
        print(f"grounding F {g['mean']:.4f} (n={g['n']}: no interval)")
    elif g["mean"] is not None:
        print(f"grounding F {g['mean']:.4f} [{g['low']:.4f}, {g['high']:.4f}] (n={g['n']})")
    failures = (
        f"parse failures {parse['parse_failures']}/{cls['n']} "
        f"({parse['parse_failure_rate']:.1%}; each scores grounding F 0)"
        if parse["trace_expected"]
        else f"unanswered {cls['n'] - round(cls['answered_rate'] * cls['n'])}/{cls['n']} "
        "(zero-shot: no trace asked)"
    )
    print(
        f"{failures}  empty activated lists {parse['empty_activated']}  "
        f"no face {cls['n'] - parse['faces_found']}"
    )
    skipped = m.get("skipped_images") or 0
    if skipped:
        print(f"skipped {skipped} dataset row(s) with missing or corrupt images (--skip_missing)")
    return 0


def _cmd_compare(argv: list[str]) -> int:
    from tag_eval._records import EvalInputError
    from tag_eval.human_study import import_answers
    from tag_eval.judge import JudgeConfig, compare_runs

    parsed = _compare_parser().parse_args_and_config(argv)
    a: CompareArguments = parsed[0]
    runs = _runs(parsed)
    if a.import_answers:
        res = import_answers(a.import_answers, a.key)
        if a.output_dir:
            Path(a.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(a.output_dir) / "human_scores.json").write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
        return 0
    if len(runs) != 2:
        raise EvalInputError(f"compare needs exactly two runs (RUN_A RUN_B), got {len(runs)}")
    judge = None
    if a.judge_url or a.judge_model:
        if not (a.judge_url and a.judge_model):
            raise EvalInputError("--judge_url and --judge_model go together")
        judge = JudgeConfig(
            base_url=a.judge_url,
            model=a.judge_model,
            api_key_env=a.judge_api_key_env,
            timeout=a.judge_timeout,
            retries=a.judge_retries,
            backoff=a.judge_backoff,
            send_images=a.judge_images,
        )
    if judge is None and not a.export_human:
        raise EvalInputError("nothing to do: give --judge_url/--judge_model and/or --export_human")
    out = a.output_dir or str(Path(runs[0]) / f"compare-{Path(runs[1]).name}")
    res = compare_runs(
        runs[0],
        runs[1],
        out,
        judge=judge,
        export_human=a.export_human,
        limit=a.limit,
        seed=a.seed,
        progress=a.progress,
    )
    print(f"compare: {out} ({res['n_pairs']} pairs)")
    for crit, v in (res.get("judge") or {}).items():
        if isinstance(v, dict):
            print(
                f"  {crit:22s} win {v['win']:3d}  tie {v['tie']:3d}  loss {v['loss']:3d}  (n={v['n']})"
            )
    return 0


def _cmd_report(argv: list[str]) -> int:
    from tag_eval._records import EvalInputError
    from tag_eval.report import build_report

    parsed = _report_parser().parse_args_and_config(argv)
    a: ReportArguments = parsed[0]
    runs = _runs(parsed)
    if not runs:
        raise EvalInputError("report needs at least one run folder (RUN ...)")
    path = build_report(
        runs,
        a.out,
        title=a.title,
        gallery_size=a.gallery_size,
        seed=a.seed,
        compare_dirs=a.compare,
    )
    print(f"report: {path}")
    return 0


def _print_help() -> None:
    print("usage: tag-eval {run,compare,report} [options]\n")
    print(_DESCRIPTION)
    print(_EPILOG, end="")


def _one_line(exc: BaseException) -> str:
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] + (" (--debug shows more)" if len(lines) > 1 else "")


def _classify(exc: BaseException) -> tuple[int, str] | None:
    """``(exit status, label)`` of an expected failure, or ``None`` for a bug."""
    from tag_model.backbones import BackboneNotFoundError, UnknownFamilyError
    from tag_model.chat import ChatError
    from tag_model.datasets import DatasetFormatError, DatasetImageError

    from tag_eval._records import EvalInputError
    from tag_eval.judge import JudgeError

    if isinstance(exc, _UsageError):
        return EXIT_CODES["usage"], "error"
    if isinstance(exc, EvalInputError):
        return exc.exit_code, "error"
    if isinstance(exc, JudgeError):
        return EXIT_CODES["endpoint"], "judge error"
    if isinstance(exc, ChatError):
        return EXIT_CODES["endpoint"], "endpoint error"
    if isinstance(exc, BackboneNotFoundError):
        return EXIT_CODES["model"], "error"
    if isinstance(exc, UnknownFamilyError):
        return EXIT_CODES["usage"], "error"
    if isinstance(exc, (DatasetFormatError, DatasetImageError)):
        return EXIT_CODES["dataset"], "dataset error"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tag-eval``; returns the exit status (:data:`EXIT_CODES`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if not args or args[0] in ("-h", "--help"):
        _print_help()
        return 0 if args else EXIT_CODES["usage"]
    command, rest = args[0], args[1:]
    handlers = {"run": _cmd_run, "compare": _cmd_compare, "report": _cmd_report}
    if command not in handlers:
        print(
            f"tag-eval: error: unknown command {command!r}; choose from run, compare, report",
            file=sys.stderr,
        )
        return EXIT_CODES["usage"]
    try:
        return handlers[command](rest)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Exception as exc:
        kind = _classify(exc)
        if kind is None:
            raise
        code, label = kind
        if debug:
            traceback.print_exc()
        print(f"tag-eval {command}: {label}: {_one_line(exc)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
