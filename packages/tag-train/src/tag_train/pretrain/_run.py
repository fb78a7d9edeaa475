"""``tag-train pretrain``: the seeded two-stage pretraining of a nano TAG base model."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from tag_train.pretrain._presets import PRETRAIN_PRESETS, PretrainPreset
from tag_train.pretrain._qa import qa_rows, qa_scores, render_faces
from tag_train.pretrain._vision import VisionWarmup, mirrored, vision_warmup

__all__ = ["held_out_faces", "main", "qa_generate", "run_pretrain", "vision_stage"]

FAMILY = "qwen2_vl"


def qa_generate(
    model: Any, processor: Any, images: list[Any], questions: list[str], max_new_tokens: int = 120
) -> list[str]:
    """Greedy answers to one question per image, in the chat format SFT trained on."""
    from tag_model.backbones import generate_completions

    out: list[str] = []
    for s in range(0, len(images), 16):
        chats = [
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
            for q in questions[s : s + 16]
        ]
        out += generate_completions(
            model,
            processor,
            images[s : s + 16],
            None,
            messages=chats,
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
    return out


def _save_dataset(cols: dict[str, list[Any]], path: Path) -> None:
    from datasets import Dataset, Features, Image, Sequence, Value

    feats = Features(
        {
            "image": Image(),
            "label": Value("string"),
            "kind": Value("string"),
            "prompt": [{"role": Value("string"), "content": Value("string")}],
            "trace": Value("string"),
            "activated": [
                {"au": Value("int32"), "prob": Value("float32"), "box": Sequence(Value("float32"))}
            ],
            "regions": [{"name": Value("string"), "box": Sequence(Value("float32"))}],
        }
    )
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    Dataset.from_dict(cols, features=feats).save_to_disk(str(tmp))
    tmp.rename(path)


def _render_args(p: PretrainPreset, progress: bool) -> dict[str, Any]:
    """:func:`render_faces`'s face settings for the preset's faces."""
    return dict(size=p.image_size, labels=p.labels, variation=p.variation, progress=progress)


def held_out_faces(p: PretrainPreset, progress: bool = True) -> tuple[list, list, list]:
    """The preset's held-out faces (after the vision and grounding ranges): ``(images,
    labels, landmarks)``, for the vision head's accuracy and the final evaluation."""
    return render_faces(
        p.face_seed,
        p.vision_faces + p.qa_faces,
        p.eval_faces,
        desc="held-out faces",
        **_render_args(p, progress),
    )


def vision_stage(
    p: PretrainPreset, stage1: Path, held: tuple[list, list], progress: bool = True
) -> dict[str, float]:
    """Stage 1 of ``p``: a fresh ``make_tiny_vlm`` whose tower learns the preset's vision
    faces and their mirrors (:func:`vision_warmup`; ``held`` = held-out ``(images, labels)``),
    saved to ``stage1`` (model + processor) atomically. The stage checkpoints into
    ``<stage1>.ckpt.pt`` and resumes from it; the file is removed once ``stage1`` is saved.
    Returns :func:`vision_warmup`'s record."""
    from tag_model.backbones import make_tiny_vlm

    ckpt = stage1.with_name(stage1.name + ".ckpt.pt")
    model, processor = make_tiny_vlm(FAMILY, seed=p.seed, image_size=p.image_size)
    faces = mirrored(
        *render_faces(
            p.face_seed, 0, p.vision_faces, desc="vision faces", **_render_args(p, progress)
        )
    )
    info = vision_warmup(
        model,
        processor,
        (faces[0], faces[1], np.stack(faces[2])),
        held,
        p.labels,
        VisionWarmup(steps=p.vision_steps, batch=p.vision_batch, lr=p.vision_lr, seed=p.seed),
        progress=progress,
        checkpoint=ckpt,
    )
    del faces
    tmp = stage1.with_name(stage1.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    tmp.rename(stage1)
    ckpt.unlink(missing_ok=True)
    return info


def run_pretrain(
    preset: PretrainPreset,
    output_dir: str | os.PathLike[str],
    work_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    verbose: bool = False,
) -> dict[str, Any]:
    """Pretrain a nano Qwen2-VL base into ``output_dir`` (safetensors, tokenizer, processor,
    ``pretrain.json``). Returns the record written to ``pretrain.json``.

    1. ``make_tiny_vlm("qwen2_vl", seed=preset.seed)``: random weights, offline tokenizer.
    2. Vision stage (:func:`vision_warmup`): the tower learns emotions, landmarks, AU
       probabilities and token positions on ``vision_faces`` faces and their mirrors.
    3. Grounding stage: TRL's ``SFTTrainer`` (through ``tag-train sft``'s :func:`run_sft`)
       trains the language model and merger on grounding questions (:mod:`._qa`).
    4. Greedy evaluation on ``eval_faces`` held-out faces (:func:`qa_scores`).

    Each stage is kept in ``work_dir`` (default ``<output_dir>.work``), so a run that stops
    resumes from the last finished stage, and within a stage from its last checkpoint (the
    vision stage every 500 steps, ``stage1.ckpt.pt``; the grounding stage six times); the
    folder is removed at the end.
    """
    from tag_train._cpu import cpu_job, cpu_sft

    cpu_job(verbose)
    from tag_model.backbones import get_adapter
    from transformers import AutoModelForImageTextToText, AutoProcessor

    t_start = time.perf_counter()
    out = Path(output_dir)
    work = Path(work_dir) if work_dir else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    p = preset
    seconds: dict[str, float] = {}
    record_path = work / "record.json"
    record: dict[str, Any] = json.loads(record_path.read_text()) if record_path.exists() else {}
    if record.get("preset") not in (None, p.to_dict()):
        raise ValueError(
            f"{work} holds a run of another preset ({record['preset']['name']}); "
            "remove it or give --work_dir"
        )
    record["preset"] = p.to_dict()
    eval_im, eval_y, eval_lm = held_out_faces(p, progress)

    stage1 = work / "stage1"
    if not (stage1 / "config.json").exists():
        t = time.perf_counter()
        info = vision_stage(p, stage1, (eval_im, eval_y), progress)
        record["vision"] = info
        seconds["vision"] = time.perf_counter() - t
        record.setdefault("seconds", {}).update(seconds)
        record_path.write_text(json.dumps(record, indent=2))
        print(
            f"vision stage: {info['seconds']:.0f}s on {info['faces']} faces; emotion head on "
            f"held-out faces {info['eval_accuracy']:.2f} (chance {1 / len(p.labels):.2f})"
        )
    processor = AutoProcessor.from_pretrained(stage1)
    adapter = get_adapter(FAMILY, processor=processor)

    qa = work / "qa"
    if not (qa / "dataset_info.json").exists():
        t = time.perf_counter()
        im, ys, lm = render_faces(
            p.face_seed,
            p.vision_faces,
            p.qa_faces,
            desc="grounding faces",
            **_render_args(p, progress),
        )
        _save_dataset(
            qa_rows(im, ys, lm, adapter, seed=p.seed, top_k=p.top_k, threshold=p.threshold), qa
        )
        seconds["qa_data"] = time.perf_counter() - t

    stage2 = work / "stage2"
    if not (stage2 / "DONE").exists():
        t = time.perf_counter()
        cpu_sft(
            stage1,
            qa,
            stage2,
            work / "grounding_metrics.jsonl",
            steps=p.qa_steps,
            batch=p.qa_batch,
            lr=p.qa_lr,
            train_merger=True,
            train_vision=p.qa_train_vision,
            seed=p.seed,
            checkpoints=6,
            desc="grounding stage",
            verbose=verbose,
            resume=True,
        )
        (stage2 / "DONE").write_text("ok")
        seconds["grounding"] = time.perf_counter() - t
        last = [json.loads(x) for x in (work / "grounding_metrics.jsonl").read_text().splitlines()]
        losses = [x["loss"] for x in last if "loss" in x]
        record["grounding"] = {"steps": p.qa_steps, "final_loss": losses[-1] if losses else None}

    t = time.perf_counter()
    model = AutoModelForImageTextToText.from_pretrained(stage2).eval()
    eval_rows = qa_rows(
        eval_im, eval_y, eval_lm, adapter, seed=p.seed + 1, top_k=p.top_k, threshold=p.threshold
    )
    texts = qa_generate(
        model, processor, eval_rows["image"], [q[0]["content"] for q in eval_rows["prompt"]]
    )
    record["eval"] = {"faces": p.eval_faces, **qa_scores(texts, eval_rows, adapter)}
    record["eval_examples"] = texts[:4]
    seconds["eval"] = time.perf_counter() - t
    record.setdefault("seconds", {}).update(seconds)
    record["seconds"]["total_this_call"] = time.perf_counter() - t_start
    record["family"] = FAMILY
    record["command"] = f"tag-train pretrain --preset {p.name}"
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "pretrain.json").write_text(json.dumps(record, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    ev = record["eval"]
    print(
        f"pretrained base -> {out}: on {p.eval_faces} held-out faces, region box IoU "
        f"{ev['region_iou']:.3f}, AU mean IoU {ev['au_mean_iou']:.3f} (precision "
        f"{ev['au_precision']:.2f}, recall {ev['au_recall']:.2f}), expression {ev['expression']:.2f}"
    )
    return record


def main(argv: list[str] | None = None) -> int:
    """``tag-train pretrain [--preset nano|smoke] [--output_dir D] [--work_dir W] [--verbose]``."""
    parser = argparse.ArgumentParser(
        prog="tag-train pretrain",
        description="Pretrain a nano TAG base model (Qwen2-VL family) on SynthFACS faces: a "
        "vision stage, then grounding questions. Seeded: the same preset gives the same "
        "weights. `tag-nano`, the base the demo starts from, is `--preset nano`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--preset", choices=sorted(PRETRAIN_PRESETS), default="nano")
    parser.add_argument("--output_dir", default=None, help="default: runs/pretrain-<preset>")
    parser.add_argument(
        "--work_dir", default=None, help="stage checkpoints (default: <output_dir>.work)"
    )
    parser.add_argument("--verbose", action="store_true", help="the trainer's per-step logs")
    args = parser.parse_args(argv or [])
    preset = PRETRAIN_PRESETS[args.preset]
    run_pretrain(
        preset,
        args.output_dir or f"runs/pretrain-{preset.name}",
        args.work_dir,
        verbose=args.verbose,
    )
    return 0
