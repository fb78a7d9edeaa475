"""Batched generation on face images with a loaded (or tiny) backbone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._prompts import build_messages, build_prompt_text

if TYPE_CHECKING:
    from ._coords import BackboneAdapter

__all__ = ["generate_completions"]


def generate_completions(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    labels: Any,
    *,
    family: str | BackboneAdapter | None = None,
    grounded: bool = True,
    system: str | None = None,
    style: str = "full",
    max_new_tokens: int = 512,
    do_sample: bool = False,
    messages: Sequence[list[dict[str, Any]]] | None = None,
    **generate_kwargs: Any,
) -> list[str]:
    """Generate one completion per image (decoded, special tokens skipped).

    Args:
        model, processor: e.g. from :func:`load_backbone` or :func:`make_tiny_vlm`.
        images: PIL images (any size; the processor resizes them).
        labels: the label set (``LabelSpace``, its name, or names).
        family: the family or adapter whose box convention the prompt states
            (default: ``model.config.model_type``).
        grounded: TAG's grounded trace prompt, or the zero-shot baseline.
        style: the grounded instruction's style (``"full"`` or ``"compact"``, the one the
            model was fine-tuned with).
        max_new_tokens, do_sample, **generate_kwargs: passed to ``model.generate``.
        messages: one chat per image, asked instead of TAG's prompt (``labels``,
            ``grounded``, ``system`` and ``style`` are then unused); each holds one
            ``{"type": "image"}`` placeholder.

    Returns:
        The completions' text, in the order of ``images``.
    """
    import torch

    if family is None:
        family = getattr(getattr(model, "config", None), "model_type", None)
    images = list(images)
    if not images:
        return []
    if messages is None:
        messages = [
            build_messages(
                img, labels, grounded=grounded, system=system, family=family, style=style
            )
            for img in images
        ]
    elif len(messages) != len(images):
        raise ValueError(f"messages: {len(messages)} chats for {len(images)} images")
    prompts = [build_prompt_text(processor, m) for m in messages]
    tokenizer = processor.tokenizer
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only batched generation pads on the left
    try:
        # one image list per prompt: Gemma 3 and SmolVLM processors count images per sample
        inputs = processor(
            text=prompts, images=[[im] for im in images], return_tensors="pt", padding=True
        )
    finally:
        tokenizer.padding_side = old_side
    device = next(model.parameters()).device
    inputs = inputs.to(device)
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=do_sample, **generate_kwargs
        )
    new_tokens = out[:, inputs["input_ids"].shape[1] :]
    return processor.batch_decode(new_tokens, skip_special_tokens=True)
