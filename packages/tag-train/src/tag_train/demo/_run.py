"""The demo's pipeline: faces -> traces -> base model -> SFT -> GRPO, with its command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tag_train._cpu import cpu_args, cpu_job, cpu_sft, quiet_callbacks
from tag_train.demo._ablation import ablation_report
from tag_train.demo._base import BASES, base_model
from tag_train.demo._evaluate import greedy_eval, mean_box_baseline, tower_probes
from tag_train.demo._presets import PRESETS, PROMPT_STYLE, DemoPreset, cache_root
from tag_train.demo._summary import (
    compare_evals,
    demo_goals,
    draw_samples,
    fmt_change,
    fmt_eval,
    fmt_rewards,
    load_average,
    plot_rewards,
    rl_fifths,
)

__all__ = ["main", "run_demo"]


def _public(ev: dict[str, Any]) -> dict[str, Any]:
    """A greedy evaluation without its completions and per-face arrays (for summary.json)."""
    return {k: v for k, v in ev.items() if k not in ("completions", "per_face")}


def _faces(root: Path, preset: DemoPreset) -> tuple[Any, Any]:
    """SynthFACS train/test splits in RAF-DB layout, read back with the RAF-DB reader."""
    from tag_model.datasets import load_rafdb
    from tag_model.synth import attach_synth_landmarks, write_rafdb_layout

    if not (root / "EmoLabel").exists():
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        write_rafdb_layout(
            tmp,
            preset.n_train + preset.n_eval,
            size=preset.image_size,
            seed=preset.seed,
            labels=preset.labels,
            test_fraction=preset.n_eval / (preset.n_train + preset.n_eval),
        )
        tmp.rename(root)
    return (
        attach_synth_landmarks(load_rafdb(root, "train"), str(root)),
        attach_synth_landmarks(load_rafdb(root, "test"), str(root)),
    )


def _traces(ds: Any, out: Path, preset: DemoPreset, progress: bool) -> Any:
    from datasets import load_from_disk

    from tag_train.teachers import TemplateTeacher
    from tag_train.traces import TraceBuildConfig, build_traces

    if not (out / "state.json").exists():
        summary = build_traces(
            ds,
            TemplateTeacher(
                seed=preset.seed,
                variety=preset.template_variety,
                style="compact",
                rationalize=preset.teacher_rationalize,
            ),
            out,
            TraceBuildConfig(
                family="qwen2_vl",
                labels=preset.labels,
                top_k=preset.top_k,
                min_face_px=32,
                use_dlib=False,
                prompt_style=PROMPT_STYLE,
            ),
            progress=progress,
        )
        print(summary.as_text())
    return load_from_disk(str(out))


def _sft(
    base: Path,
    traces_dir: Path,
    out: Path,
    metrics: Path,
    preset: DemoPreset,
    verbose: bool = False,
) -> None:
    if (out / "DONE").exists():
        return
    cpu_sft(
        base,
        traces_dir,
        out,
        metrics,
        steps=preset.sft_steps,
        batch=preset.sft_batch,
        lr=preset.sft_lr,
        train_merger=preset.train_merger,
        train_vision=preset.sft_train_vision,
        verbose=verbose,
    )
    (out / "DONE").write_text("ok")


def grpo_args(
    preset: DemoPreset,
    model: Path,
    dataset: Path,
    output_dir: Path,
    metrics: Path,
    weights: tuple[float, float, float],
    **overrides: Any,
) -> tuple[Any, Any]:
    """``(RLScriptArguments, GRPOConfig)`` of the demo's GRPO with ``preset``'s ``rl_*``
    settings: ``model`` trained on ``dataset`` into ``output_dir``, per-step metrics to
    ``metrics``, ``weights`` = (format, answer, grounding). ``overrides`` go to the config
    (for example ``max_steps`` or ``save_strategy``)."""
    from trl import GRPOConfig

    from tag_train._args import RLScriptArguments

    rargs = RLScriptArguments(
        model_name_or_path=str(model),
        family="qwen2_vl",
        dataset_path=str(dataset),
        metrics_file=str(metrics),
        train_merger=preset.train_merger,
        box_credit=preset.rl_box_credit,
        claim_credit=preset.rl_claim_credit,
        grounding_beta=preset.rl_grounding_beta,
    )
    gen = preset.rl_generations
    kw: dict[str, Any] = {
        "output_dir": str(output_dir),
        "max_steps": preset.rl_steps,
        "per_device_train_batch_size": preset.rl_prompts * gen,
        "num_generations": gen,
        "temperature": preset.rl_temperature,
        "learning_rate": preset.rl_lr,
        "lr_scheduler_type": "constant",
        "beta": preset.rl_beta,
        "num_iterations": preset.rl_iterations,
        "max_completion_length": preset.rl_max_completion,
        "reward_weights": list(weights),
        "multi_objective_aggregation": preset.rl_aggregation,
        "log_completions": False,
        "seed": preset.seed,
    }
    kw.update(overrides)
    return rargs, cpu_args(GRPOConfig, **kw)


def _rl_arm(
    preset: DemoPreset,
    cache: Path,
    out: Path,
    weights: tuple[float, float, float],
    processor: Any,
    eval_ds: Any,
    ev_sft: dict[str, Any],
    progress: bool,
    verbose: bool,
    label: str = "GRPO",
    traces: Path | None = None,
) -> dict[str, Any]:
    """GRPO from the cached SFT into ``out/rl`` with ``weights`` (format, answer, grounding),
    then a greedy evaluation: ``{trainer, fifths, eval, vs_sft, seconds}``. The GRPO log lines
    are appended to ``out/metrics.jsonl`` with ``"phase": "rl"``. GRPO's prompts are the
    cached SFT traces unless ``traces`` names another trace dataset on disk."""
    from tag_train.rl import run_rl

    t = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    rl_metrics = out / "rl_metrics.jsonl"
    rargs, targs = grpo_args(
        preset,
        cache / "sft",
        traces or cache / "traces",
        out / "rl",
        rl_metrics,
        weights,
        save_strategy="steps",
        save_steps=max(5, preset.rl_steps // 4),
        save_total_limit=1,
    )
    show = {
        "reward": "reward",
        "rewards/answer_reward/mean": "answer",
        "rewards/grounding_reward/mean": "grounding",
    }
    trainer = run_rl(rargs, targs, callbacks=quiet_callbacks(verbose, label, show))
    seconds = {"rl": time.perf_counter() - t}
    with open(out / "metrics.jsonl", "a") as fh:
        for line in rl_metrics.read_text().splitlines():
            fh.write(json.dumps({"phase": "rl", **json.loads(line)}) + "\n")
    fifths = rl_fifths(out / "metrics.jsonl")
    print(f"{label}: reward components (sampled, T={preset.rl_temperature}, weights {weights}):")
    print("  start (first fifth): " + fmt_rewards(fifths["first_fifth"]))
    print("  end   (last fifth):  " + fmt_rewards(fifths["last_fifth"]))
    print("  change, 95% CI:      " + fmt_change(fifths["change"]))
    t = time.perf_counter()
    ev = greedy_eval(
        trainer.model.eval(),
        processor,
        eval_ds,
        preset.labels,
        preset.eval_max_new_tokens,
        progress,
    )
    seconds["eval"] = time.perf_counter() - t
    print(f"greedy eval after {label}: " + fmt_eval(ev))
    vs_sft = compare_evals(ev, ev_sft)
    print("  minus after SFT, same faces, 95% CI: " + fmt_change(vs_sft))
    return {"trainer": trainer, "fifths": fifths, "eval": ev, "vs_sft": vs_sft, "seconds": seconds}


def run_demo(
    preset: DemoPreset,
    run_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run the demo; returns the summary also written to ``<run_dir>/summary.json``.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set) when torch is not imported yet
    (:func:`tag_train._cpu.cpu_job`).

    The terminal shows one progress bar per phase and each phase's result line; per-step
    metrics go to ``metrics.jsonl``. ``verbose=True`` brings back the trainers' per-step log
    dicts and the libraries' warnings.
    """
    cpu_job(verbose)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    t_start = time.perf_counter()
    run = Path(run_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    run.mkdir(parents=True, exist_ok=True)
    cache = cache_root(cache_dir) / preset.key()
    cache.mkdir(parents=True, exist_ok=True)
    metrics = run / "metrics.jsonl"
    times: dict[str, float] = {}
    print(f"TAG demo ({preset.name}): run folder {run}, cache {cache}")

    t = time.perf_counter()
    train_faces, eval_faces = _faces(cache / "faces", preset)
    traces = _traces(train_faces, cache / "traces", preset, progress)
    eval_ds = _traces(eval_faces, cache / "eval_traces", preset, progress)
    times["data"] = time.perf_counter() - t

    t = time.perf_counter()
    cached_sft = (cache / "sft" / "DONE").exists()
    base = base_model(cache / "base", traces, eval_ds, preset, progress)
    times["base"] = time.perf_counter() - t
    t = time.perf_counter()
    sft_metrics = cache / "sft_metrics.jsonl"
    _sft(cache / "base", cache / "traces", cache / "sft", sft_metrics, preset, verbose)
    times["sft"] = time.perf_counter() - t
    if sft_metrics.exists():
        with open(metrics, "a") as fh:
            for line in sft_metrics.read_text().splitlines():
                fh.write(json.dumps({"phase": "sft", **json.loads(line)}) + "\n")
    print("SFT: " + ("cached, skipped" if cached_sft else f"trained in {times['sft']:.0f}s"))

    t = time.perf_counter()
    model = AutoModelForImageTextToText.from_pretrained(cache / "sft").eval()
    processor = AutoProcessor.from_pretrained(cache / "sft")
    ev_sft = greedy_eval(
        model, processor, eval_ds, preset.labels, preset.eval_max_new_tokens, progress
    )
    times["eval_sft"] = time.perf_counter() - t
    print("greedy eval after SFT: " + fmt_eval(ev_sft))
    baseline = mean_box_baseline(traces, eval_ds)
    print(f"  (per-AU mean training box, AU given: IoU {baseline:.3f})")
    t = time.perf_counter()
    probes = tower_probes(cache, traces, eval_ds, preset)
    times["probes"] = time.perf_counter() - t
    print(
        "  (linear read-out of the frozen tower's tokens, fit on the trace faces: "
        f"accuracy {probes['accuracy']:.2f}  mean IoU {probes['mean_iou']:.3f} "
        f"(AU recall {probes['au_recall']:.2f}, box IoU {probes['box_iou']:.3f}); "
        f"true class given, its usual AUs with mean boxes: mean IoU "
        f"{probes['class_mean_box_mean_iou']:.3f})"
    )

    weights = (1.0, 1.0, preset.rl_grounding_weight)
    arm = _rl_arm(preset, cache, run, weights, processor, eval_ds, ev_sft, progress, verbose)
    trainer, fifths, ev_rl, rl_vs_sft = arm["trainer"], arm["fifths"], arm["eval"], arm["vs_sft"]
    times["rl"], times["eval_rl"] = arm["seconds"]["rl"], arm["seconds"]["eval"]
    ablation = None
    if preset.ablation:
        t = time.perf_counter()
        other = _rl_arm(
            preset,
            cache,
            run / "no_grounding",
            (1.0, 1.0, 0.0),
            processor,
            eval_ds,
            ev_sft,
            progress,
            verbose,
            label="GRPO without the grounding reward",
        )
        ablation = ablation_report(run, ev_sft, arm, other, weights)
        times["ablation_arm"] = time.perf_counter() - t

    plot_rewards(metrics, run / "reward_curves.png")
    draw_samples(run, eval_ds, ev_rl, preset.labels, preset.n_pictures)
    if preset.name.startswith("smoke"):  # toy checkpoints: nothing worth keeping
        shutil.rmtree(run / "rl", ignore_errors=True)
        shutil.rmtree(run / "no_grounding" / "rl", ignore_errors=True)
    times["total"] = time.perf_counter() - t_start
    summary = {
        "preset": dataclasses.asdict(preset),
        "cache": str(cache),
        "sft_cached": cached_sft,
        "base": base,
        "eval_after_sft": _public(ev_sft),
        "eval_after_rl": _public(ev_rl),
        "rl_vs_sft": rl_vs_sft,
        "mean_box_baseline_iou_found": baseline,
        "tower_probes": probes,
        "rl_rewards": fifths,
        "reward_share": getattr(trainer, "tag_reward_share", {}),
        "seconds": times,
        "load_average": load_average(),
    }
    if ablation is not None:
        summary["ablation"] = ablation
    summary["goals"] = demo_goals(summary)
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    # the per-face values behind the greedy means, so that another run or a GRPO arm on the
    # same held-out faces compares paired (tag_model.stats.bootstrap_diff_ci(..., paired=True))
    per_face = {"after_sft": ev_sft["per_face"], "after_rl": ev_rl["per_face"]}
    (run / "per_face.json").write_text(json.dumps(per_face))
    share = summary["reward_share"].get("tag/reward_share", float("nan"))
    print(f"reward functions: {100 * share:.2f} % of a GRPO step")
    print("wall time per phase: " + "  ".join(f"{k} {v:.0f}s" for k, v in times.items()))
    print("demo goals (met only means something for the default preset):")
    for name, g in summary["goals"].items():
        print(f"  [{'met ' if g['met'] else 'MISS'}] {name}: {g['value']}")
    if ablation is not None:
        print("ablation goals (GRPO with the grounding reward vs without, same SFT and seed):")
        for name, g in ablation["goals"].items():
            print(f"  [{'met ' if g['met'] else 'MISS'}] {name}: {g['value']}")
        print(f"  table: {run / 'ablation.md'}  figure: {run / 'ablation_curves.png'}")
    print(f"done in {times['total']:.0f}s -> {run}")
    return summary


def parse_demo_labels(text: str) -> tuple[str, ...]:
    """``--labels``: a label space's name (``rafdb``) or comma-separated canonical labels.

    >>> parse_demo_labels("happiness, anger")
    ('happiness', 'anger')
    >>> len(parse_demo_labels("rafdb"))
    7
    """
    from tag_model.au import CANONICAL_LABELS, get_label_space

    if "," not in text:
        try:
            return tuple(get_label_space(text).names)
        except KeyError:
            pass
    labels = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in labels if x not in CANONICAL_LABELS]
    if bad or len(labels) < 2 or len(set(labels)) != len(labels):
        raise SystemExit(
            f"tag-train rl: --labels {text!r}: give a label space (rafdb, ferplus, affectnet7, "
            f"affectnet8) or two or more distinct labels from {', '.join(CANONICAL_LABELS)}"
            + (f"; unknown: {', '.join(bad)}" if bad else "")
        )
    return labels


def main(argv: list[str] | None = None) -> int:
    """``tag-train rl [--preset smoke|default|ablation] [--labels L] [--run_dir D] [--cache_dir C]
    [--no_cache] [--seed S] [--verbose]``."""
    parser = argparse.ArgumentParser(
        prog="tag-train rl", description="The built-in TAG demo (CPU)."
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="default: the demo (<= 15 min uncached); smoke: the same path at toy size (CI); "
        "ablation: the default's cached SFT, then GRPO with and without the grounding reward",
    )
    parser.add_argument("--run_dir", default=None, help="default: runs/demo-<timestamp>")
    parser.add_argument("--cache_dir", default=None, help="default: $TAG_CACHE or ./.tag-cache")
    parser.add_argument(
        "--no_cache", action="store_true", help="rebuild the cached faces/traces/SFT"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--base",
        choices=BASES,
        default=None,
        help="the base model: tag-nano (default; pretrained, shipped with tag-model) or "
        "warmup (random weights whose vision tower is warmed up on the demo's faces)",
    )
    parser.add_argument(
        "--labels",
        default=None,
        help="the classes: a label space (rafdb: its 7 classes) or comma-separated canonical "
        "labels; default: RAF-DB's 7 classes. Other "
        "labels get their own cache",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print the trainers' per-step metrics and the libraries' warnings",
    )
    args = parser.parse_args(argv or [])
    preset = PRESETS[args.preset]
    if args.seed is not None:
        preset = dataclasses.replace(preset, seed=args.seed)
    if args.labels is not None:
        preset = dataclasses.replace(preset, labels=parse_demo_labels(args.labels))
    if args.base is not None:
        preset = dataclasses.replace(preset, base=args.base)
    if args.no_cache:
        shutil.rmtree(cache_root(args.cache_dir) / preset.key(), ignore_errors=True)
    logging.basicConfig(level=logging.WARNING)
    run_demo(preset, args.run_dir, args.cache_dir, verbose=args.verbose)
    return 0
