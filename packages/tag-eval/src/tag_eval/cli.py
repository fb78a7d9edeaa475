"""The ``tag-eval`` console script: ``run``, ``compare`` and ``report``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["build_parser", "main"]

_DESCRIPTION = """\
Evaluate TAG models and base VLMs in one harness.

  tag-eval run      generate on a FER dataset; writes accuracy, macro-F1, a confusion
                    matrix, AU-grounding faithfulness (grounding F-score, AU precision and
                    recall, hallucination rate, EMFACS consistency, with bootstrap CIs) and
                    a per-sample JSONL into --out. Interrupted runs resume.
  tag-eval compare  preference study of two runs on the same images: an LLM judge over any
                    OpenAI-compatible endpoint (each pair judged twice, positions swapped)
                    and/or an HTML + CSV export for a human study (--export-human), scored
                    back with --import-answers.
  tag-eval report   one self-contained HTML report for one or more runs.

Run `tag-eval <command> --help` for the options of each command.
"""

_EPILOG = """\
examples:
  tag-eval run --model ./ckpt --dataset rafdb --root data/RAF-DB --split test --out runs/tag
  tag-eval run --model Qwen/Qwen2.5-VL-3B-Instruct --prompt zeroshot --dataset rafdb \\
      --root data/RAF-DB --out runs/base
  TAG_JUDGE_API_KEY=... tag-eval compare runs/tag runs/base --judge-url http://localhost:8000/v1 \\
      --judge-model Qwen/Qwen2.5-VL-72B-Instruct --out runs/compare
  tag-eval compare runs/tag runs/base --export-human --out runs/human
  tag-eval compare --import-answers filled_sheet.csv --key runs/human/human_key.json \
      --out runs/human
  tag-eval report runs/tag runs/base --compare runs/compare runs/human --out report.html
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``tag-eval`` argument parser (``run``, ``compare``, ``report``)."""
    from tag_eval.run import DATASETS, PROMPTS

    p = argparse.ArgumentParser(
        prog="tag-eval",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="{run,compare,report}")

    r = sub.add_parser(
        "run",
        help="evaluate a model on a FER dataset",
        description="Generate, parse and score a model on a FER dataset.",
    )
    r.add_argument("--model", required=True, help="checkpoint directory or hub id")
    r.add_argument("--dataset", required=True, choices=DATASETS)
    r.add_argument("--root", required=True, help="dataset root directory")
    r.add_argument("--split", default="test", help="dataset split (default: test)")
    r.add_argument(
        "--prompt",
        choices=PROMPTS,
        default="grounded",
        help="TAG's AU-grounded prompt, its one-line 'compact' form (for students trained "
        "with tag-train traces --prompt_style compact), or the zero-shot baseline "
        "(default: grounded)",
    )
    r.add_argument("--out", help="run directory (default: runs/<model>-<dataset>-...)")
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--max-new-tokens", type=int, default=512)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--limit", type=int, help="evaluate only the first N samples")
    r.add_argument(
        "--detector",
        default="geometric",
        help="AU detector: 'geometric' (on landmarks), 'openface:FILE.csv' (frame k is sample "
        "k-1) or 'openface:DIR' (one CSV per image, named by its stem)",
    )
    r.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    r.add_argument("--family", help="backbone family (default: from the checkpoint's config)")
    r.add_argument(
        "--label-space",
        help="label space of a folder dataset (rafdb, ferplus, affectnet7, affectnet8; "
        "default: the eight canonical classes)",
    )
    r.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    r.add_argument("--top-k", type=int, default=6, help="activated-list size (default 6)")
    r.add_argument("--threshold", type=float, default=0.5, help="AU activation threshold")
    r.add_argument(
        "--tau",
        type=float,
        default=0.3,
        help="IoU below which a box misses its AU's region (default 0.3)",
    )
    r.add_argument(
        "--face-margin",
        type=float,
        default=0.1,
        help="face box = landmark box grown by this fraction of the face size",
    )
    r.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    r.add_argument("--no-progress", action="store_true")

    c = sub.add_parser(
        "compare",
        help="preference study of two runs",
        description="Compare two runs' traces on the same images.",
    )
    c.add_argument("runs", nargs="*", metavar="RUN", help="RUN_A RUN_B")
    c.add_argument("--out", help="output directory (default: RUN_A/compare-<RUN_B name>)")
    c.add_argument("--judge-url", help="OpenAI-compatible API root, e.g. http://host:8000/v1")
    c.add_argument("--judge-model", help="judge model name")
    c.add_argument(
        "--judge-api-key-env",
        default="TAG_JUDGE_API_KEY",
        help="environment variable holding the API key (never logged)",
    )
    c.add_argument("--judge-timeout", type=float, default=60.0)
    c.add_argument("--judge-retries", type=int, default=3)
    c.add_argument("--judge-backoff", type=float, default=1.0)
    c.add_argument("--no-judge-images", action="store_true", help="send traces only")
    c.add_argument(
        "--export-human",
        action="store_true",
        help="write human_study.html, answer_sheet.csv and human_key.json",
    )
    c.add_argument(
        "--import-answers",
        nargs="+",
        metavar="CSV",
        help="score filled answer sheets instead of comparing runs",
    )
    c.add_argument("--key", help="human_key.json (default: beside the first sheet)")
    c.add_argument("--limit", type=int)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--no-progress", action="store_true")

    rep = sub.add_parser(
        "report",
        help="self-contained HTML report",
        description="Render one HTML report for one or more runs.",
    )
    rep.add_argument("runs", nargs="+", metavar="RUN")
    rep.add_argument("--out", default="report.html")
    rep.add_argument("--title", default="TAG evaluation report")
    rep.add_argument("--gallery-size", type=int, default=12)
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument(
        "--compare",
        nargs="+",
        default=[],
        metavar="DIR",
        help="tag-eval compare output folders to include (judge and human results)",
    )
    return p


def _cmd_run(a: argparse.Namespace) -> int:
    from tag_eval.run import RunConfig, run_eval

    cfg = RunConfig(
        model=a.model,
        dataset=a.dataset,
        root=a.root,
        split=a.split,
        out=a.out,
        prompt=a.prompt,
        batch_size=a.batch_size,
        max_new_tokens=a.max_new_tokens,
        seed=a.seed,
        limit=a.limit,
        detector=a.detector,
        engine=a.engine,
        family=a.family,
        label_space=a.label_space,
        device=a.device,
        top_k=a.top_k,
        threshold=a.threshold,
        tau=a.tau,
        face_margin=a.face_margin,
        n_boot=a.n_boot,
    )
    m = run_eval(cfg, progress=not a.no_progress)
    cls, f = m["classification"], m["faithfulness"]
    print(f"run: {cfg.out_dir()}")
    print(f"accuracy {cls['accuracy']:.4f}  macro-F1 {cls['macro_f1'] or 0:.4f}  n={cls['n']}")
    g = f["grounding_f"]
    if g["mean"] is not None:
        print(f"grounding F {g['mean']:.4f} [{g['low']:.4f}, {g['high']:.4f}]")
    return 0


def _cmd_compare(a: argparse.Namespace) -> int:
    from tag_eval._records import EvalInputError
    from tag_eval.human_study import import_answers
    from tag_eval.judge import JudgeConfig, compare_runs

    if a.import_answers:
        res = import_answers(a.import_answers, a.key)
        if a.out:
            Path(a.out).mkdir(parents=True, exist_ok=True)
            (Path(a.out) / "human_scores.json").write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
        return 0
    if len(a.runs) != 2:
        raise EvalInputError(f"compare needs exactly two runs (RUN_A RUN_B), got {len(a.runs)}")
    judge = None
    if a.judge_url or a.judge_model:
        if not (a.judge_url and a.judge_model):
            raise EvalInputError("--judge-url and --judge-model go together")
        judge = JudgeConfig(
            base_url=a.judge_url,
            model=a.judge_model,
            api_key_env=a.judge_api_key_env,
            timeout=a.judge_timeout,
            retries=a.judge_retries,
            backoff=a.judge_backoff,
            send_images=not a.no_judge_images,
        )
    if judge is None and not a.export_human:
        raise EvalInputError("nothing to do: give --judge-url/--judge-model and/or --export-human")
    out = a.out or str(Path(a.runs[0]) / f"compare-{Path(a.runs[1]).name}")
    res = compare_runs(
        a.runs[0],
        a.runs[1],
        out,
        judge=judge,
        export_human=a.export_human,
        limit=a.limit,
        seed=a.seed,
        progress=not a.no_progress,
    )
    print(f"compare: {out} ({res['n_pairs']} pairs)")
    for crit, v in (res.get("judge") or {}).items():
        if isinstance(v, dict):
            print(
                f"  {crit:22s} win {v['win']:3d}  tie {v['tie']:3d}  loss {v['loss']:3d}  (n={v['n']})"
            )
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from tag_eval.report import build_report

    path = build_report(
        a.runs,
        a.out,
        title=a.title,
        gallery_size=a.gallery_size,
        seed=a.seed,
        compare_dirs=a.compare,
    )
    print(f"report: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tag-eval``; returns the exit status (2 for bad input)."""
    from tag_eval._records import EvalInputError
    from tag_eval.judge import JudgeError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handlers = {"run": _cmd_run, "compare": _cmd_compare, "report": _cmd_report}
    try:
        return handlers[args.command](args)
    except EvalInputError as exc:
        print(f"tag-eval {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except JudgeError as exc:
        print(f"tag-eval {args.command}: judge error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
