#!/usr/bin/env python3
"""GRPO settings, measured: arms of the demo's GRPO from its cached SFT, with the demo's own
statistics (the sampled rewards' last fifth minus first fifth, and greedy after RL minus after
SFT on the same held-out faces, each with a bootstrap 95% CI).

    uv run tag-train rl                       # once: builds and caches the default SFT
    uv run python scripts/demo_grpo_arms.py gdpo '{"rl_aggregation": "normalize_then_sum"}' \
        gonly '{"rl_aggregation": "normalize_then_sum", "answer_weight": 0}'

Each arm is ``NAME JSON``: the JSON overrides fields of the default preset's GRPO settings
(``tag_train.demo._presets.GRPO_FIELDS``: the ``rl_*`` fields such as ``rl_lr`` or
``rl_aggregation``) and ``seed`` (GRPO's seed; the SFT is the cached one of ``--sft_seed``), plus
``answer_weight`` (default 1). Arms run one after the other; each writes
``runs/arms/NAME/result.json`` (its greedy ``eval`` keeps ``per_face``, so two arms compare
paired: ``tag_model.stats.bootstrap_diff_ci(a, b, paired=True)``, as the README's "with minus
without" rows do) and prints one ``RESULT`` line. ``--threads 1`` lets two of these
processes share a 2-core machine (a step took the same 3.9 s at 1 thread beside another run
as at 2 threads alone). ``--fresh N`` gives GRPO N faces the SFT never saw instead of its own
training faces (SynthFACS seed ``1000 + --sft_seed``, template traces only for the prompts and
the detector's lists; cached beside the demo's cache). The README's table "Why GRPO moves grounding so little" was measured
with these same calls, run from a scratch copy of this script.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from _arms import fresh_traces, parse_arms
from tag_train._cpu import cpu_job


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("arms", nargs="+", help="NAME JSON [NAME JSON ...]")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--out", default="runs/arms", help="parent folder of the arms' runs")
    ap.add_argument("--cache_dir", default=None, help="the demo's cache (default .tag-cache)")
    ap.add_argument(
        "--sft_seed",
        type=int,
        default=0,
        help="start from the default demo's cached SFT of this seed (`tag-train rl --seed N` "
        "builds it); default 0",
    )
    ap.add_argument(
        "--fresh",
        type=int,
        default=0,
        help="GRPO on N fresh faces the SFT never saw (SynthFACS seed 1000 + --sft_seed) "
        "instead of the SFT's training faces; default 0 (the SFT's own faces, as the demo)",
    )
    args = ap.parse_args(argv)
    if args.fresh < 0:
        ap.error(f"--fresh must be >= 0, got {args.fresh}")
    from tag_train.demo._presets import GRPO_FIELDS

    fields = {*GRPO_FIELDS, "seed"}
    arms = parse_arms(ap, args.arms, fields | {"answer_weight"})

    cpu_job(False, threads=args.threads)
    from datasets import load_from_disk
    from tag_train.demo._evaluate import greedy_eval
    from tag_train.demo._presets import PRESETS, cache_root
    from tag_train.demo._run import _rl_arm
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base = dataclasses.replace(PRESETS["default"], seed=args.sft_seed)
    cache = cache_root(args.cache_dir) / base.key()
    if not (cache / "sft" / "DONE").exists():
        print(
            f"demo_grpo_arms: no cached SFT at {cache}; run "
            f"`uv run tag-train rl --seed {args.sft_seed}` first"
        )
        return 1
    traces = None
    if args.fresh:
        traces = fresh_traces(base, cache, args.fresh)
        print(f"GRPO prompts: {args.fresh} fresh faces, traces in {traces}", flush=True)
    processor = AutoProcessor.from_pretrained(cache / "sft")
    eval_ds = load_from_disk(str(cache / "eval_traces"))
    model = AutoModelForImageTextToText.from_pretrained(cache / "sft").eval()
    ev_sft = greedy_eval(model, processor, eval_ds, base.labels, base.eval_max_new_tokens, False)
    del model
    keys = ("format", "accuracy", "mean_iou", "grounding", "hallucination")
    print("greedy after SFT: " + "  ".join(f"{k} {ev_sft[k]:.3f}" for k in keys), flush=True)
    for name, ov in arms:
        answer_weight = float(ov.get("answer_weight", 1.0))
        preset = dataclasses.replace(base, **{k: v for k, v in ov.items() if k in fields})
        weights = (1.0, answer_weight, preset.rl_grounding_weight)
        out = Path(args.out) / name
        t = time.perf_counter()
        arm = _rl_arm(
            preset,
            cache,
            out,
            weights,
            processor,
            eval_ds,
            ev_sft,
            False,
            False,
            label=name,
            traces=traces,
        )
        result = {
            "name": name,
            "overrides": ov,
            "fresh_faces": args.fresh,
            "weights": weights,
            "fifths": arm["fifths"],
            "vs_sft": arm["vs_sft"],
            "eval": {k: v for k, v in arm["eval"].items() if k != "completions"},
            "seconds": time.perf_counter() - t,
        }
        (out / "result.json").write_text(json.dumps(result, indent=2))
        print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
