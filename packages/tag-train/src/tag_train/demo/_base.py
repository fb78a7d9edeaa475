"""The demo's base model, cached: the shipped ``tag-nano`` (default), or a warm-up from scratch.

``base="tag-nano"`` starts where a real run starts, from a pretrained base: the nano Qwen2-VL
that ``tag-train pretrain --preset nano`` built and ``tag-model`` ships. ``base="warmup"`` is
the older path, kept for comparison: random weights whose vision tower alone is warmed up on
the demo's own trace faces (:func:`tag_train.pretrain.vision_warmup`), and no grounding stage.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from tag_train.demo._presets import DemoPreset

__all__ = ["base_fingerprint", "base_model"]

BASES = ("tag-nano", "warmup")


def base_fingerprint(base: str) -> str:
    """What identifies the base in the cache key: the shipped ``pretrain.json``'s hash (so new
    weights invalidate the cached stages), or ``base`` itself for the warm-up."""
    if base not in BASES:
        raise ValueError(f"demo base {base!r}: choose from {', '.join(BASES)}")
    if base == "warmup":
        return base
    from tag_model.backbones import shipped_backbone_path

    record = shipped_backbone_path(base) / "pretrain.json"
    return f"{base}:{hashlib.sha1(record.read_bytes()).hexdigest()[:12]}"


def _warmup_faces(ds: Any, preset: DemoPreset, progress: bool) -> tuple[list, list, np.ndarray]:
    """The trace images plus ``preset.warmup_extra`` fresh SynthFACS faces (another seed),
    each also mirrored. The extra faces' label and landmarks are known by construction, which
    is all the tower's warm-up needs (no traces)."""
    from tag_model.synth import SynthFACS
    from tqdm.auto import tqdm

    from tag_train.pretrain import mirrored

    images, labels = list(ds["image"]), list(ds["label"])
    lms = [np.asarray(x, dtype=np.float32) for x in ds["landmarks"]]
    gen = SynthFACS(size=preset.image_size, seed=preset.seed + 10_000, labels=preset.labels)
    for i in tqdm(range(preset.warmup_extra), desc="warm-up faces", disable=not progress):
        smp = gen.sample(i)
        images.append(smp.image)
        labels.append(smp.label)
        lms.append(np.asarray(smp.landmarks, dtype=np.float32))
    images, labels, lms = mirrored(images, labels, lms)
    return images, labels, np.stack(lms)


def base_model(out: Path, traces: Any, eval_ds: Any, preset: DemoPreset, progress: bool) -> dict:
    """The base model saved at ``out`` (model + processor), made unless cached there.

    Returns its record (also ``out/base.json``): ``{"base": ..., "seconds": ...}`` plus the
    shipped ``pretrain.json`` (tag-nano) or the warm-up's ``loss``, ``eval_accuracy`` and
    ``faces``; ``{}`` for a cached folder without one.
    """
    if (out / "config.json").exists():
        return json.loads((out / "base.json").read_text()) if (out / "base.json").exists() else {}
    t = time.perf_counter()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if preset.base == "warmup":
        from tag_model.backbones import make_tiny_vlm

        from tag_train.pretrain import VisionWarmup, vision_warmup

        model, processor = make_tiny_vlm("qwen2_vl", seed=preset.seed, image_size=preset.image_size)
        settings = VisionWarmup(
            steps=preset.warmup_steps,
            batch=preset.warmup_batch,
            lr=preset.warmup_lr,
            landmark_weight=preset.warmup_landmark_weight,
            au_weight=preset.warmup_au_weight,
            position_weight=preset.warmup_position_weight,
            token_landmark_weight=preset.warmup_token_landmark_weight,
            seed=preset.seed,
        )
        info = vision_warmup(
            model,
            processor,
            _warmup_faces(traces, preset, progress),
            (list(eval_ds["image"]), list(eval_ds["label"])),
            preset.labels,
            settings,
            progress=progress,
        )
        print(
            f"vision warm-up: {info['seconds']:.1f}s on {info['faces']} faces, tower accuracy "
            f"on held-out faces {info['eval_accuracy']:.2f} (chance {1 / len(preset.labels):.2f})"
        )
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        record = {"base": "warmup", **info}
    else:
        from tag_model.backbones import shipped_backbone_path

        src = shipped_backbone_path(preset.base)
        shutil.copytree(src, tmp)
        record = {"base": preset.base, "pretrain": json.loads((src / "pretrain.json").read_text())}
        print(f"base model: {preset.base} (shipped with tag-model, {src})")
    record["seconds"] = time.perf_counter() - t
    (tmp / "base.json").write_text(json.dumps(record))
    tmp.rename(out)
    return record
