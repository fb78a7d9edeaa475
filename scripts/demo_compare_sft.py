#!/usr/bin/env python3
"""Two cached demo SFT checkpoints, compared greedy on the same held-out faces, paired.

    uv run tag-train rl                  # caches the default demo (tag-nano base)
    uv run tag-train rl --base warmup    # caches the same data and SFT on the warm-up base
    uv run python scripts/demo_compare_sft.py --a_base tag-nano --b_base warmup

Each side is the default preset with ``--X_base`` (and ``--seed``), read from the demo's cache;
the faces are side A's held-out traces. Prints each side's greedy evaluation and A minus B per
metric with a paired bootstrap 95% CI (the README's "tag-nano against the old base" table).
"""

from __future__ import annotations

import argparse
import dataclasses
import json


def main(argv: list[str] | None = None) -> int:
    from tag_train.demo._base import BASES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a_base", default="tag-nano", choices=BASES)
    ap.add_argument("--b_base", default="warmup", choices=BASES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache_dir", default=None, help="the demo's cache (default .tag-cache)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = ap.parse_args(argv)

    from tag_train._cpu import cpu_job

    cpu_job(False, threads=args.threads)  # before torch loads: threads, quiet libraries
    from datasets import load_from_disk
    from tag_train.demo._evaluate import greedy_eval
    from tag_train.demo._presets import PRESETS, cache_root
    from tag_train.demo._summary import compare_evals, fmt_change, fmt_eval
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base = dataclasses.replace(PRESETS["default"], seed=args.seed)
    caches = {
        side: cache_root(args.cache_dir) / dataclasses.replace(base, base=b).key()
        for side, b in (("A", args.a_base), ("B", args.b_base))
    }
    for c in caches.values():
        if not (c / "sft" / "DONE").exists():
            raise SystemExit(f"no cached SFT at {c}: run `uv run tag-train rl --base ...` first")
    ds = load_from_disk(str(caches["A"] / "eval_traces"))
    evs = {}
    for side, c in caches.items():
        model = AutoModelForImageTextToText.from_pretrained(c / "sft").eval()
        processor = AutoProcessor.from_pretrained(c / "sft")
        evs[side] = greedy_eval(
            model, processor, ds, base.labels, base.eval_max_new_tokens, progress=True
        )
        print(f"{side} ({c.name}): " + fmt_eval(evs[side]))
    diff = compare_evals(evs["A"], evs["B"])
    print("A minus B, paired over the same faces: " + fmt_change(diff))
    print("RESULT " + json.dumps(diff))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
