#!/usr/bin/env python3
"""How much a longer vision stage lifts the tower: linear probes on the demo's faces.

Runs `tag-train pretrain --preset nano`'s vision stage (same faces, seed, batch and learning
rate) with ``--vision_steps`` steps, then fits the demo's linear probes
(``tag_train._probes.linear_probe_scores``: class, AU set, landmarks -> boxes) on the tokens of
the default demo's 1,400 trace faces and scores them on its 210 held-out faces. The shipped
``tag-nano`` tower is probed on the same faces in the same run, as the baseline.

    uv run tag-train rl                                   # once: caches the demo's faces
    uv run python scripts/tower_probe.py --vision_steps 24000 --out runs/tower24k

The vision stage (``tag_train.pretrain._run.vision_stage``, as ``tag-train pretrain`` runs it)
checkpoints every 500 steps into ``--out``/tower.ckpt.pt; run the same command again to
resume an interrupted one. It prints one ``RESULT`` line and writes ``--out``/result.json.
``--full_base`` then also runs the nano preset's grounding stage on this tower (``run_pretrain``
with the vision stage taken from ``--out``) into ``--out``/base, a base the demo's scripts can
start from (``scripts/demo_sft_arms.py --base_dir``).
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
    ap.add_argument("--vision_steps", type=int, required=True, help="the vision stage's steps")
    ap.add_argument("--out", required=True, help="folder: checkpoint, tower, result.json")
    ap.add_argument("--seed", type=int, default=0, help="the default demo's seed (its faces)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--cache_dir", default=None, help="the demo's cache (default .tag-cache)")
    ap.add_argument(
        "--full_base",
        action="store_true",
        help="then run the grounding stage too, into OUT/base (a whole base model)",
    )
    args = ap.parse_args(argv)
    if args.vision_steps < 1:
        ap.error(f"--vision_steps must be >= 1, got {args.vision_steps}")

    cpu_job(False, threads=args.threads)
    from datasets import load_from_disk
    from tag_model.backbones import load_backbone
    from tag_train.demo._evaluate import probe_tower
    from tag_train.demo._presets import PRESETS, cache_root
    from tag_train.pretrain import PRETRAIN_PRESETS
    from tag_train.pretrain._run import held_out_faces, vision_stage
    from transformers import AutoModelForImageTextToText, AutoProcessor

    demo = dataclasses.replace(PRESETS["default"], seed=args.seed)
    cache = cache_root(args.cache_dir) / demo.key()
    if not (cache / "eval_traces" / "dataset_info.json").exists():
        print(
            f"tower_probe: no demo faces at {cache}; run `uv run tag-train rl --seed {args.seed}`"
        )
        return 1
    traces = load_from_disk(str(cache / "traces"))
    eval_ds = load_from_disk(str(cache / "eval_traces"))
    shipped = probe_tower(*load_backbone("tag-nano")[:2], traces, eval_ds, demo.image_size)
    print("shipped tag-nano: " + json.dumps(shipped), flush=True)

    # the nano preset with a vision stage of --vision_steps
    longer_preset = dataclasses.replace(
        PRETRAIN_PRESETS["nano"],
        name=f"nano-vision{args.vision_steps}",
        vision_steps=args.vision_steps,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tower = out / "tower"
    if not (tower / "config.json").exists():
        held = held_out_faces(longer_preset)
        info = vision_stage(longer_preset, tower, (held[0], held[1]))
        (out / "vision.json").write_text(json.dumps(info))
    info = json.loads((out / "vision.json").read_text())

    t = time.perf_counter()
    longer = probe_tower(
        AutoModelForImageTextToText.from_pretrained(tower).eval(),
        AutoProcessor.from_pretrained(tower),
        traces,
        eval_ds,
        demo.image_size,
    )
    result = {
        "vision_steps": args.vision_steps,
        "demo_seed": args.seed,
        "vision": info,
        "probe": longer,
        "shipped_probe": shipped,
        "probe_seconds": time.perf_counter() - t,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print("RESULT " + json.dumps(result), flush=True)
    if args.full_base:
        import shutil

        from tag_train.pretrain import run_pretrain

        work = out / "base.work"
        if not (work / "stage1" / "config.json").exists():
            shutil.copytree(tower, work / "stage1", dirs_exist_ok=True)
        record = run_pretrain(longer_preset, out / "base", work)
        print("BASE " + json.dumps(record.get("eval", {})), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
