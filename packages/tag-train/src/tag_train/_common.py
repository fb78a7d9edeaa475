"""Helpers shared by ``sft`` and ``rl``: model loading with TAG's freezing policy, datasets, resume."""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["cpu_friendly", "label_names", "last_checkpoint", "load_model_for_training"]

logger = logging.getLogger(__name__)


def load_model_for_training(args: Any) -> tuple[Any, Any, Any, Any]:
    """Load ``args.model_name_or_path`` and apply the backbone adapter's freezing policy.

    Returns ``(model, processor, adapter, param_report)``; ``model`` is the peft model when
    ``args.lora`` is set. The vision encoder is frozen unless ``args.train_vision``; the
    projector trains unless ``args.train_merger`` is false.
    """
    from tag_model.backbones import LoraSpec, freeze_for_training, load_backbone

    if not args.model_name_or_path:
        raise ValueError("--model_name_or_path is required (a local folder or a hub id)")
    model, processor, adapter = load_backbone(
        args.model_name_or_path, family=args.family, dtype="auto"
    )
    lora = None
    if args.lora:
        kw: dict[str, Any] = {
            "r": args.lora_r,
            "alpha": args.lora_alpha,
            "dropout": args.lora_dropout,
        }
        if args.lora_target_modules:
            kw["target_modules"] = tuple(args.lora_target_modules)
        lora = LoraSpec(**kw)
    report = freeze_for_training(model, lora=lora, train_merger=args.train_merger)
    model = report.model if report.model is not None else model
    if args.train_vision:
        for name, p in model.named_parameters():
            if ".visual." in f".{name}." or name.startswith("visual."):
                p.requires_grad_(True)
    logger.info("trainable parameters: %s", report)
    return model, processor, adapter, report


def label_names(dataset: Any, label_space: str | None) -> tuple[str, ...]:
    """The label set: a named label space, else the sorted labels present in ``dataset``."""
    if label_space:
        from tag_model.au import get_label_space

        return tuple(get_label_space(label_space).names)
    return tuple(sorted(set(dataset["label"])))


def last_checkpoint(output_dir: str) -> str | None:
    """The newest *complete* ``checkpoint-*`` folder in ``output_dir`` (None if there is none).

    A run killed while saving leaves a partial folder behind; ``transformers`` would pick it
    and fail. A checkpoint counts as complete when its ``trainer_state.json`` (written last by
    the Trainer) parses; partial ones are skipped with a warning.
    """
    import json
    import re

    if not os.path.isdir(output_dir):
        return None
    found = []
    for name in os.listdir(output_dir):
        m = re.fullmatch(r"checkpoint-(\d+)", name)
        if m and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(m.group(1)), os.path.join(output_dir, name)))
    for _step, path in sorted(found, reverse=True):
        try:
            with open(os.path.join(path, "trainer_state.json")) as fh:
                json.load(fh)
        except (OSError, ValueError):
            logger.warning("skipping incomplete checkpoint %s (killed while saving?)", path)
            continue
        return path
    return None


def train_and_save(
    trainer: Any, script_args: Any, training_args: Any, processor: Any, what: str
) -> None:
    """Train (resuming from the newest complete checkpoint when asked), then save model and processor."""
    resume = None
    if script_args.resume or training_args.resume_from_checkpoint:
        resume = training_args.resume_from_checkpoint or last_checkpoint(training_args.output_dir)
        print(
            f"tag-train {what}: resuming from {resume}"
            if resume
            else f"tag-train {what}: no checkpoint, starting fresh"
        )
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    if processor is not None:
        processor.save_pretrained(training_args.output_dir)


def cpu_friendly(training_args: Any) -> Any:
    """On a machine without CUDA, turn off bf16 autocast (TRL's default) and gradient checkpointing."""
    import torch

    if not torch.cuda.is_available():
        if getattr(training_args, "bf16", False):
            logger.info("no CUDA device: training in float32 (bf16=False)")
            training_args.bf16 = False
        if getattr(training_args, "gradient_checkpointing", False):
            training_args.gradient_checkpointing = False
    return training_args
