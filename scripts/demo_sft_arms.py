#!/usr/bin/env python3
"""SFT settings, measured: arms of the demo's SFT from its cached base and traces, each judged
greedy on the held-out faces against the cached SFT (paired bootstrap 95% CIs).

    uv run tag-train rl                       # once: builds and caches the default demo
    uv run python scripts/demo_sft_arms.py merger '{"train_merger": true}' lr2 '{"sft_lr": 2e-3}'

The reference is the default preset's cached SFT (``--seed``); ``--reference JSON`` applies SFT
overrides to find another cached one (a demo cached with those settings). Arms apply their
overrides on top of the reference's.

Each arm is ``NAME JSON``: the JSON overrides the default preset's SFT fields (``sft_steps``,
``sft_batch``, ``sft_lr``, ``train_merger``, ``sft_train_vision``). Arms run one after the
other; each writes its checkpoint and ``result.json`` (its greedy ``eval`` with ``per_face``, ``vs_sft``: the arm
minus the cached SFT, and ``seconds``) under ``--out``/NAME and prints one ``RESULT`` line.
``--threads 1`` lets two of these processes share a 2-core machine. ``--extra_faces N`` trains
every arm on the cached traces plus N more faces' template traces (SynthFACS seed
``1000 + --seed``, faces no demo split uses; cached beside the demo's cache), same steps.
``--base_dir D`` starts the arms from another base model folder (a ``tag-train pretrain``
output) instead of the cached ``tag-nano``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from _arms import fresh_traces, parse_arms
from tag_train._cpu import cpu_job, cpu_sft

FIELDS = ("sft_steps", "sft_batch", "sft_lr", "train_merger", "sft_train_vision")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("arms", nargs="*", help="NAME JSON [NAME JSON ...]")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--out", default="runs/sft_arms", help="parent folder of the arms' runs")
    ap.add_argument("--cache_dir", default=None, help="the demo's cache (default .tag-cache)")
    ap.add_argument("--seed", type=int, default=0, help="the default demo's seed (its cache)")
    ap.add_argument("--reference", default="{}", help="SFT overrides of the reference (JSON)")
    ap.add_argument(
        "--train_faces",
        type=int,
        default=0,
        help="also evaluate the cached SFT on this many of its own training faces (over- or "
        "underfitting: compare with the held-out faces)",
    )
    ap.add_argument(
        "--base_dir",
        default=None,
        help="start the arms from this base model folder (e.g. a `tag-train pretrain` output) "
        "instead of the cached base (the shipped tag-nano)",
    )
    ap.add_argument(
        "--extra_faces",
        type=int,
        default=0,
        help="train the arms on the cached traces plus N more faces (SynthFACS seed 1000 + "
        "--seed) with the same steps; default 0",
    )
    args = ap.parse_args(argv)
    if args.extra_faces < 0:
        ap.error(f"--extra_faces must be >= 0, got {args.extra_faces}")
    arms = parse_arms(ap, args.arms, FIELDS, first=("--reference", args.reference))
    reference = arms.pop(0)[1]

    cpu_job(False, threads=args.threads)
    from datasets import load_from_disk
    from tag_train.demo._evaluate import greedy_eval
    from tag_train.demo._presets import PRESETS, cache_root
    from tag_train.demo._summary import compare_evals, fmt_change, fmt_eval
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base = dataclasses.replace(PRESETS["default"], seed=args.seed, **reference)
    cache = cache_root(args.cache_dir) / base.key()
    if not (cache / "sft" / "DONE").exists():
        print(
            f"demo_sft_arms: no cached SFT at {cache}; run `uv run tag-train rl` first (it "
            "caches the default preset's SFT; --reference names another preset's)"
        )
        return 1
    eval_ds = load_from_disk(str(cache / "eval_traces"))

    def evaluate(path: Path, ds: object = eval_ds) -> dict:
        model = AutoModelForImageTextToText.from_pretrained(path).eval()
        processor = AutoProcessor.from_pretrained(path)
        return greedy_eval(model, processor, ds, base.labels, base.eval_max_new_tokens, False)

    ev_sft = evaluate(cache / "sft")
    print("greedy after the cached SFT: " + fmt_eval(ev_sft), flush=True)
    if args.train_faces:
        train = load_from_disk(str(cache / "traces"))
        train = train.select(range(min(args.train_faces, len(train))))
        ev = evaluate(cache / "sft", train)
        print(f"  the same on {len(train)} of its training faces: " + fmt_eval(ev), flush=True)
    traces = cache / "traces"
    if args.extra_faces:
        traces = _with_extra_faces(base, cache, args.extra_faces)
    for name, ov in arms:
        preset = dataclasses.replace(base, **ov)
        out = Path(args.out) / name
        t = time.perf_counter()
        cpu_sft(
            Path(args.base_dir) if args.base_dir else cache / "base",
            traces,
            out / "sft",
            out / "sft_metrics.jsonl",
            steps=preset.sft_steps,
            batch=preset.sft_batch,
            lr=preset.sft_lr,
            train_merger=preset.train_merger,
            train_vision=preset.sft_train_vision,
            desc=name,
        )
        seconds = time.perf_counter() - t
        ev = evaluate(out / "sft")
        vs = compare_evals(ev, ev_sft)
        print(f"{name} ({seconds:.0f} s of SFT): " + fmt_eval(ev))
        print("  minus the cached SFT, same faces, 95% CI: " + fmt_change(vs), flush=True)
        result = {
            "name": name,
            "overrides": ov,
            "extra_faces": args.extra_faces,
            "base_dir": args.base_dir,
            "seconds": seconds,
            "vs_sft": vs,
            "eval": {k: v for k, v in ev.items() if k != "completions"},
        }
        (out / "result.json").write_text(json.dumps(result, indent=2))
        print("RESULT " + json.dumps({k: result[k] for k in ("name", "seconds", "vs_sft")}))
    return 0


def _with_extra_faces(base: object, cache: Path, n: int) -> Path:
    """The cached SFT traces plus ``n`` fresh faces' template traces, saved once on disk."""
    from datasets import concatenate_datasets, load_from_disk

    more = fresh_traces(base, cache, n)
    both = more.with_name("traces_plus")
    if not (both / "dataset_info.json").exists():
        merged = concatenate_datasets(
            [load_from_disk(str(cache / "traces")), load_from_disk(str(more))]
        )
        merged.save_to_disk(str(both))
    print(f"SFT traces: the cached ones plus {n} more faces ({both})", flush=True)
    return both


if __name__ == "__main__":
    sys.exit(main())
