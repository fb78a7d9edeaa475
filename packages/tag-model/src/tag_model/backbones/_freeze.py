"""TAG's freezing policy: the language model and projector train, the vision encoder is frozen.

Optionally the language model is adapted with LoRA (peft) instead of full fine-tuning; the
projector (the vision "merger") then stays fully trainable through ``modules_to_save``.

The same policy holds for every family; only the module names differ:

================  =======================  ==============================  ================
family            vision (frozen)          projector (trains)              language model
================  =======================  ==============================  ================
Qwen-VL           ``visual``               ``visual.merger`` (+ deepstack)  ``language_model``
InternVL          ``vision_tower``         ``multi_modal_projector``       ``language_model``
LLaVA-OneVision   ``vision_tower``         ``multi_modal_projector``,      ``language_model``
                                           ``image_newline``
Gemma 3           ``vision_tower``         ``multi_modal_projector``       ``language_model``
SmolVLM           ``vision_model``         ``connector``                   ``text_model``
================  =======================  ==============================  ================

LoRA targets the language model's ``q/k/v/o_proj`` and ``gate/up/down_proj`` in every family
(Qwen2, Gemma 3 and Llama decoders share these names). LLaVA-OneVision's ``image_newline`` is a
bare parameter, which peft's ``modules_to_save`` cannot hold: with LoRA it stays frozen (it
trains in full fine-tuning).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PARTS",
    "LoraSpec",
    "ParamReport",
    "PartCount",
    "freeze_for_training",
    "lora_config_for",
    "param_report",
    "part_of",
]

#: The parts a parameter is counted under.
PARTS: tuple[str, ...] = ("vision", "merger", "language_model", "lm_head", "other")

#: Linear layers of the Qwen language models that LoRA adapts by default.
_LM_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: Projector modules (vision -> language): the merger and, in Qwen3-VL, the deepstack mergers.
_MERGER_KEYS = ("merger", "deepstack_merger_list")
#: Vision towers by family: Qwen ``visual``, InternVL / LLaVA-OV / Gemma 3 ``vision_tower``,
#: SmolVLM ``vision_model``.
_VISION_KEYS = ("visual", "vision_tower", "vision_model")
#: Projectors outside the vision tower: ``multi_modal_projector`` (InternVL, LLaVA-OV,
#: Gemma 3), ``connector`` (SmolVLM), ``image_newline`` (LLaVA-OV's row separator).
_PROJECTOR_KEYS = ("multi_modal_projector", "connector", "image_newline")
#: Language models: ``language_model`` (most), ``text_model`` (SmolVLM / Idefics3).
_LM_KEYS = ("language_model", "text_model")


def part_of(param_name: str) -> str:
    """The part (one of :data:`PARTS`) that a parameter of a supported VLM belongs to.

    >>> part_of("model.visual.blocks.0.attn.qkv.weight")
    'vision'
    >>> part_of("model.visual.merger.mlp.0.weight")
    'merger'
    >>> part_of("model.connector.modality_projection.proj.weight")
    'merger'
    >>> part_of("model.text_model.layers.0.self_attn.q_proj.weight")
    'language_model'
    """
    parts = param_name.split(".")
    if any(k in parts for k in _VISION_KEYS):
        return "merger" if any(k in parts for k in _MERGER_KEYS) else "vision"
    if any(k in parts for k in _PROJECTOR_KEYS):
        return "merger"
    if "lm_head" in parts:
        return "lm_head"
    if any(k in parts for k in _LM_KEYS):
        return "language_model"
    return "other"


@dataclass(frozen=True)
class PartCount:
    """Parameter counts of one part."""

    total: int
    trainable: int


@dataclass(frozen=True)
class ParamReport:
    """Trainable parameter counts, overall and by part.

    Attributes:
        total: number of parameters (shared tensors counted once).
        trainable: number with ``requires_grad``.
        by_part: ``{part: PartCount}`` for each part in :data:`PARTS` that has parameters.
        model: the model to train (the peft wrapper when LoRA was applied, else the input).
    """

    total: int
    trainable: int
    by_part: dict[str, PartCount]
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def trainable_fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        rows = [f"{'part':<15}{'trainable':>14}{'total':>14}"]
        for name, c in self.by_part.items():
            rows.append(f"{name:<15}{c.trainable:>14,}{c.total:>14,}")
        rows.append(
            f"{'all':<15}{self.trainable:>14,}{self.total:>14,}"
            f"  ({100 * self.trainable_fraction:.2f}% trainable)"
        )
        return "\n".join(rows)


def param_report(model: Any) -> ParamReport:
    """Count ``model``'s parameters by part, without changing anything."""
    totals = dict.fromkeys(PARTS, 0)
    trainable = dict.fromkeys(PARTS, 0)
    for name, p in model.named_parameters():  # shared (tied) tensors are yielded once
        part = part_of(name)
        n = p.numel()
        totals[part] += n
        if p.requires_grad:
            trainable[part] += n
    by_part = {k: PartCount(totals[k], trainable[k]) for k in PARTS if totals[k]}
    return ParamReport(
        total=sum(totals.values()),
        trainable=sum(trainable.values()),
        by_part=by_part,
        model=model,
    )


@dataclass(frozen=True)
class LoraSpec:
    """LoRA on the language model's linear layers (see :func:`lora_config_for`).

    Attributes:
        r, alpha, dropout: the usual LoRA rank, scaling numerator and dropout.
        target_modules: linear layer names (inside the language model) to adapt.
        train_merger: keep the projector fully trainable (peft ``modules_to_save``).
        train_lm_head: also fully train ``lm_head`` (untied heads only).
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = _LM_LINEAR
    train_merger: bool = True
    train_lm_head: bool = False


def _merger_modules(model: Any) -> list[str]:
    """Names (suffixes) of the projector modules present in ``model``."""
    names = set()
    for name, _ in model.named_modules():
        parts = name.split(".")
        if parts[-1] in ("multi_modal_projector", "connector"):
            names.add(parts[-1])
        elif "visual" in parts and parts[-1] == "merger":
            names.add("merger")
        elif "visual" in parts and len(parts) >= 2 and parts[-2] == "deepstack_merger_list":
            names.add(f"deepstack_merger_list.{parts[-1]}")
    return sorted(names)


def lora_config_for(model: Any, lora: LoraSpec | Any | None = None) -> Any:
    """A peft ``LoraConfig`` implementing TAG's policy for ``model``.

    LoRA goes on the language model's linear layers only (a regex over module names, so
    the vision tower's layers of the same name are left alone), and the projector is a
    ``modules_to_save`` (fully trained, saved with the adapter). A ``LoraConfig`` given
    as ``lora`` is used as is (copied), with the projector added to its ``modules_to_save``.
    Pass the result to TRL trainers as ``peft_config``.
    """
    from peft import LoraConfig

    mergers = _merger_modules(model)
    if isinstance(lora, LoraConfig):
        cfg = copy.deepcopy(lora)  # never mutate the caller's config
        to_save = list(cfg.modules_to_save or [])
        for m in mergers:
            if m not in to_save:
                to_save.append(m)
        cfg.modules_to_save = to_save
        return cfg
    spec = lora if lora is not None else LoraSpec()
    if not isinstance(spec, LoraSpec):
        raise TypeError(
            f"lora must be None, a LoraSpec or a peft LoraConfig, got {type(lora).__name__}"
        )
    targets = "|".join(spec.target_modules)
    to_save = list(mergers) if spec.train_merger else []
    if spec.train_lm_head:
        to_save.append("lm_head")
    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=rf".*(language_model|text_model).*\.({targets})",
        modules_to_save=to_save or None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def freeze_for_training(
    model: Any,
    *,
    lora: LoraSpec | Any | None = None,
    train_merger: bool = True,
    train_lm_head: bool = True,
) -> ParamReport:
    """Apply TAG's freezing policy to ``model`` in place and report the counts.

    Without LoRA: the vision encoder is frozen; the projector (merger), the language
    model and ``lm_head`` train. With ``lora`` (a :class:`LoraSpec` or a peft
    ``LoraConfig``): the model is wrapped with ``peft.get_peft_model`` (which injects the
    adapters in place); only the LoRA weights and the projector train.

    Args:
        model: a Qwen-VL ``*ForConditionalGeneration`` (or anything with the same names).
        lora: ``None`` for full fine-tuning of the language side, else the LoRA settings.
        train_merger: without LoRA, whether the projector trains (default ``True``).
        train_lm_head: without LoRA, whether ``lm_head`` trains (default ``True``).

    Returns:
        A :class:`ParamReport`; ``report.model`` is the model to hand to the trainer
        (the ``PeftModel`` with LoRA, else ``model`` itself).
    """
    if lora is None:
        for name, p in model.named_parameters():
            part = part_of(name)
            if part == "vision":
                p.requires_grad_(False)
            elif part == "merger":
                p.requires_grad_(train_merger)
            elif part == "lm_head":
                p.requires_grad_(train_lm_head)
            else:
                p.requires_grad_(True)
        return param_report(model)

    from peft import get_peft_model

    config = lora_config_for(model, lora)
    peft_model = get_peft_model(model, config)
    for name, p in peft_model.named_parameters():
        if part_of(name) == "vision":  # never train the encoder, whatever the config says
            p.requires_grad_(False)
    return param_report(peft_model)
