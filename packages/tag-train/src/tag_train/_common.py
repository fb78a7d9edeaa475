"""Helpers shared by ``sft`` and ``rl``: model loading with TAG's freezing policy, datasets, resume."""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["cpu_friendly", "label_names", "last_checkpoint", "load_model_for_training"]

logger = logging.getLogger(__name__)


def load_model_for_training(args: Any) -> tuple[Any, Any, Any, Any]:
    """Load ``args.model_name_or_path`` and apply the backbone adapter's freezing policy.

    ``args`` carries :class:`tag_train._args.ModelArguments` (TRL ``ModelConfig`` names):
    ``dtype``, ``attn_implementation``, ``model_revision``, ``load_in_4bit`` /
    ``load_in_8bit`` (bitsandbytes, CUDA, with ``use_peft`` only), ``min_pixels`` /
    ``max_pixels`` (the processor) and ``use_peft`` with ``lora_r`` / ``lora_alpha`` /
    ``lora_dropout`` / ``lora_target_modules``.

    The input is a full checkpoint (folder or hub id) or a LoRA adapter folder. An adapter
    **continues training**: its base model is loaded, the same adapter is applied with its
    own rank and targets (trainable, projector included when it was saved with it), and the
    run saves an adapter again (``--use_peft`` is implied; ``--lora_*`` flags do not apply).
    To train full weights or a fresh adapter on top of one, merge it first
    (``tag-train merge``) and start from the merged folder.

    Returns ``(model, processor, adapter, param_report)``; ``model`` is the peft model when
    LoRA is used. The vision encoder is frozen unless ``args.train_vision``; without LoRA
    the projector trains unless ``args.train_merger`` is false.
    """
    from tag_model.backbones import (
        LoraSpec,
        checkpoint_kind,
        freeze_for_training,
        load_backbone,
        param_report,
        part_of,
    )

    from tag_train._model_options import model_load_kwargs

    if not args.model_name_or_path:
        raise ValueError("--model_name_or_path is required (a local folder or a hub id)")
    load_kw, proc_kw = model_load_kwargs(args)
    quantized = "quantization_config" in load_kw
    is_adapter = checkpoint_kind(args.model_name_or_path) == "adapter"
    if quantized and not (args.use_peft or is_adapter):
        raise ValueError(
            "--load_in_4bit/--load_in_8bit need --use_peft: quantized weights train only "
            "through LoRA adapters"
        )
    model, processor, adapter = load_backbone(
        args.model_name_or_path,
        family=args.family,
        processor_kwargs=proc_kw,
        adapter_trainable=is_adapter,
        **load_kw,
    )
    if quantized:
        from peft import prepare_model_for_kbit_training

        prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if is_adapter:  # prepare_model_for_kbit_training froze everything: thaw the adapter
            for name, p in model.named_parameters():
                if "lora_" in name or "modules_to_save" in name:
                    p.requires_grad_(True)
    if is_adapter:
        logger.info(
            "%s is a LoRA adapter: continuing to train it (--lora_* flags do not apply)",
            args.model_name_or_path,
        )
        for name, p in model.named_parameters():
            if part_of(name) == "vision":
                p.requires_grad_(False)
        report = param_report(model)
    else:
        lora = None
        if args.use_peft:
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
            if part_of(name) == "vision" and p.is_floating_point():
                p.requires_grad_(True)
        report = param_report(model)
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
