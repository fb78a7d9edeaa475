#!/usr/bin/env python3
"""GRPO's optimiser, checked: the demo's GRPO on a handful of training prompts, seen again and
again. If the sampled rewards on prompts it trains on do not rise, the trainer (not the task)
is broken; if they rise here but not over the demo's 140 distinct prompts, what GRPO learns
does not carry over from one face to the next at this size.

    uv run tag-train rl                       # once: builds and caches the default SFT
    uv run python scripts/grpo_overfit.py --prompts 4 --steps 60

The default preset's GRPO settings (2 prompts x 8 generations a step, lr 5e-5, T 0.7) from the
cached SFT of ``--sft_seed``, on the first ``--prompts`` training traces; prints the sampled
rewards of the first and the last fifth of the steps and writes ``--out``/result.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from tag_train._cpu import cpu_job


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=4, help="distinct training prompts (4)")
    ap.add_argument("--steps", type=int, default=60, help="GRPO steps (60)")
    ap.add_argument("--sft_seed", type=int, default=0, help="the cached default SFT's seed (0)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    ap.add_argument("--out", default="runs/grpo_overfit", help="output folder")
    ap.add_argument("--cache_dir", default=None, help="the demo's cache (default .tag-cache)")
    args = ap.parse_args(argv)
    if args.prompts < 1 or args.steps < 10:
        ap.error("--prompts must be >= 1 and --steps >= 10 (a fifth needs two steps for its CI)")

    cpu_job(False, threads=args.threads)
    from datasets import load_from_disk
    from tag_train._cpu import quiet_callbacks
    from tag_train.demo._presets import PRESETS, cache_root
    from tag_train.demo._run import grpo_args
    from tag_train.demo._summary import fmt_change, fmt_rewards, rl_fifths
    from tag_train.rl import run_rl

    p = dataclasses.replace(PRESETS["default"], seed=args.sft_seed)
    cache = cache_root(args.cache_dir) / p.key()
    if not (cache / "sft" / "DONE").exists():
        print(f"grpo_overfit: no cached SFT at {cache}; run `uv run tag-train rl` first")
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    traces = load_from_disk(str(cache / "traces"))
    traces.select(range(min(args.prompts, len(traces)))).save_to_disk(str(out / "data"))
    metrics = out / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    rargs, targs = grpo_args(
        p,
        cache / "sft",
        out / "data",
        out / "rl",
        metrics,
        (1.0, 1.0, p.rl_grounding_weight),
        max_steps=args.steps,
        save_strategy="no",
    )
    t = time.perf_counter()
    show = {"reward": "reward", "rewards/grounding_reward/mean": "grounding"}
    run_rl(rargs, targs, callbacks=quiet_callbacks(False, "GRPO", show))
    fifths = rl_fifths(metrics, phase=None)
    print("sampled rewards, first fifth: " + fmt_rewards(fifths["first_fifth"]))
    print("                 last fifth:  " + fmt_rewards(fifths["last_fifth"]))
    print("  change, 95% CI: " + fmt_change(fifths["change"]))
    result = {"prompts": args.prompts, "steps": args.steps, "seconds": time.perf_counter() - t}
    result.update(fifths)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
