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
    """Train (resuming from the newest complete checkpoint when asked), then save model and processor.

    With a :class:`~tag_train._callbacks.CompactProgressCallback` among the trainer's callbacks,
    transformers' own progress/printer callbacks (a metrics dict printed per logging step) go.
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from tag_train._callbacks import CompactProgressCallback

    if any(isinstance(c, CompactProgressCallback) for c in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
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
        # transformers 5 reads activation_checkpointing (gradient_checkpointing is its old name)
        for name in ("activation_checkpointing", "gradient_checkpointing"):
            if getattr(training_args, name, False):
                setattr(training_args, name, False)
    return training_args


# ------------------------------------------------------------------ resume: full checkpoints

_FULL_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's weights do not fit the model being trained (never loaded in part)."""


def load_full_checkpoint(model: Any, checkpoint: str) -> None:
    """Load the weights of a full ``save_pretrained`` checkpoint into ``model``, all or nothing.

    ``save_pretrained`` writes the checkpoint's original key names (Qwen-VL: ``model.layers.*``,
    ``visual.*``) while the live module names differ (``model.language_model.*``,
    ``model.visual.*``); a raw ``load_state_dict`` matches no key at all. The checkpoint is
    therefore read back through ``from_pretrained`` (transformers' own key conversion, in the
    model's dtype, on the CPU) and copied in with ``strict=True``.

    Raises:
        CheckpointMismatchError: a key is missing, unexpected or of another shape, on either
            side (the message names them); nothing has been copied then.
    """
    import torch

    dtype = getattr(model, "dtype", None) or next(model.parameters()).dtype
    loaded, info = type(model).from_pretrained(checkpoint, dtype=dtype, output_loading_info=True)
    problems = []
    for what in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(what) or ())
        if keys:
            problems.append(
                f"{what.replace('_', ' ')} {keys[:8]}" + (" ..." if len(keys) > 8 else "")
            )
    state = loaded.state_dict()
    live = model.state_dict()
    missing, unexpected = sorted(set(live) - set(state)), sorted(set(state) - set(live))
    if missing:
        problems.append(f"model keys not in the checkpoint {missing[:8]}")
    if unexpected:
        problems.append(f"checkpoint keys not in the model {unexpected[:8]}")
    shapes = [k for k in live if k in state and live[k].shape != state[k].shape]
    if shapes:
        problems.append(f"shape mismatches {shapes[:8]}")
    if problems:
        raise CheckpointMismatchError(
            f"cannot resume from {checkpoint}: its weights do not fit the "
            f"{type(model).__name__} being trained: " + "; ".join(problems)
        )
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    del loaded, state


def _is_full_checkpoint(path: str | None) -> bool:
    return bool(path) and any(os.path.isfile(os.path.join(path, f)) for f in _FULL_WEIGHTS)


class ResumeWeightsMixin:
    """Trainer mixin: resuming (and ``load_best_model_at_end``) restores a full model's weights.

    transformers 5's ``Trainer._load_from_checkpoint`` does ``load_state_dict(sd, strict=False)``
    with the checkpoint's saved key names, which a converted model (Qwen-VL) does not use:
    every weight is skipped and training silently continues from the base weights. For a full
    (non-PEFT) model outside FSDP / DeepSpeed / SageMaker MP this mixin loads through
    :func:`load_full_checkpoint` instead; every other case (PEFT adapters included) is the
    Trainer's own code.
    """

    def _tag_plain_model(self, model: Any = None) -> Any:
        from transformers import PreTrainedModel
        from transformers.utils import is_sagemaker_mp_enabled

        if self.is_deepspeed_enabled or self.is_fsdp_enabled or is_sagemaker_mp_enabled():
            return None
        m = self.accelerator.unwrap_model(model if model is not None else self.model)
        if not isinstance(m, PreTrainedModel) or getattr(m, "_hf_peft_config_loaded", False):
            return None  # a peft model (or adapters loaded through transformers)
        if getattr(m, "hf_quantizer", None) is not None:
            return None
        return m

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        target = self._tag_plain_model(model)
        if target is None or not _is_full_checkpoint(resume_from_checkpoint):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)  # type: ignore[misc]
        logger.info("loading the full model from %s", resume_from_checkpoint)
        load_full_checkpoint(target, resume_from_checkpoint)
        return None

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        target = self._tag_plain_model()
        if target is None or not _is_full_checkpoint(best):
            return super()._load_best_model()  # type: ignore[misc]
        logger.info("loading the best model from %s", best)
        load_full_checkpoint(target, best)
        return None


_RESUMABLE: dict[type, type] = {}


def resumable(trainer_cls: type) -> type:
    """``trainer_cls`` with :class:`ResumeWeightsMixin` in front (one class per trainer class)."""
    if trainer_cls not in _RESUMABLE:
        _RESUMABLE[trainer_cls] = type(
            f"TAG{trainer_cls.__name__}",
            (ResumeWeightsMixin, trainer_cls),
            {"__module__": __name__, "__doc__": trainer_cls.__doc__},
        )
    return _RESUMABLE[trainer_cls]
