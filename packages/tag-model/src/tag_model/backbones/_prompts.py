"""Prompt building: chat messages with the image, the label set and TAG's trace instruction.

The messages use the content-part layout that transformers processors and TRL's VLM
trainers understand::

    [{"role": "system", "content": [{"type": "text", "text": ...}]},        # optional
     {"role": "user", "content": [{"type": "image", "image": <PIL.Image>},
                                  {"type": "text", "text": <instruction>}]}]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._coords import BackboneAdapter, get_adapter

__all__ = [
    "DEFAULT_PROMPT_FAMILY",
    "PROMPT_STYLES",
    "build_messages",
    "build_prompt_text",
    "grounded_instruction",
    "zero_shot_instruction",
]

#: The family whose coordinate convention ``build_messages`` states when none is given.
DEFAULT_PROMPT_FAMILY = "qwen2_vl"

#: Instruction styles of the grounded prompt: ``"full"`` spells out the trace format and the
#: box convention (for teachers and pretrained models); ``"compact"`` is one line naming the
#: labels, for a student fine-tuned on TAG traces (it has learnt the format; ~10x fewer
#: prompt tokens, which is most of a short sequence on a small model).
PROMPT_STYLES: tuple[str, ...] = ("full", "compact")

_FORMAT_EXAMPLE = (
    "Global analysis: <what the whole face shows>\n"
    "Verification loop:\n"
    "Inspect <region> → <observation> → AU<n> <bbox>[x1,y1,x2,y2]</bbox>\n"
    "Inspect <region> → <observation> → AU<n> AU<m> <bbox>[x1,y1,x2,y2]</bbox>\n"
    "Final conclusion: <which AUs combine into which emotion>\n"
    "<answer> label </answer>"
)


def _label_names(labels: Any) -> tuple[str, ...]:
    """Label names from a ``LabelSpace``, a label-space name, or a sequence of names."""
    if isinstance(labels, str):
        from tag_model.au import get_label_space

        return tuple(get_label_space(labels).names)
    names = getattr(labels, "names", labels)
    if not isinstance(names, Sequence) or isinstance(names, str):
        try:
            names = list(names)
        except TypeError as exc:
            raise TypeError(
                f"labels must be a LabelSpace, a label-space name or a sequence of label "
                f"names, got {type(labels).__name__} {labels!r}"
            ) from exc
    out = tuple(str(n).strip() for n in names)
    if not out or any(not n for n in out):
        raise ValueError(f"labels must be a non-empty sequence of non-empty names, got {labels!r}")
    return out


def _adapter(family: str | BackboneAdapter | None) -> BackboneAdapter:
    if isinstance(family, BackboneAdapter):
        return family
    return get_adapter(family or DEFAULT_PROMPT_FAMILY)


def _image_size(image: Any) -> tuple[int, int] | None:
    size = getattr(image, "size", None)  # PIL: (w, h)
    if isinstance(size, tuple) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    shape = getattr(image, "shape", None)  # HWC array
    if shape is not None and len(shape) >= 2:
        return (int(shape[1]), int(shape[0]))
    return None


def grounded_instruction(
    labels: Any,
    *,
    family: str | BackboneAdapter | None = None,
    image_size: tuple[int, int] | None = None,
    style: str = "full",
) -> str:
    """The instruction asking for an AU-grounded trace in TAG's format.

    Args:
        labels: a ``LabelSpace``, a label-space name (``"rafdb"``) or label names.
        family: the backbone family (or adapter) whose coordinate convention to state;
            ``None`` states :data:`DEFAULT_PROMPT_FAMILY`'s (0-1000 relative).
        image_size: ``(w, h)`` of the original image; for absolute-pixel families the
            instruction then names the resized size the model sees.
        style: ``"full"`` (format and box convention spelled out) or ``"compact"`` (one
            line; see :data:`PROMPT_STYLES`).

    >>> grounded_instruction(["happiness", "sadness"], style="compact")
    'Which emotion? One of: happiness, sadness. Answer with an AU-grounded TAG trace.'
    """
    names = ", ".join(_label_names(labels))
    if style == "compact":
        return f"Which emotion? One of: {names}. Answer with an AU-grounded TAG trace."
    if style != "full":
        raise ValueError(f"unknown prompt style {style!r}; use one of {', '.join(PROMPT_STYLES)}")
    coords = _adapter(family).coordinate_instruction(image_size)
    return (
        "You are an expert in facial expression analysis with the Facial Action Coding "
        "System (FACS).\n"
        f"Which emotion does this face show? Choose exactly one of: {names}.\n"
        "Reason step by step and ground every step in facial Action Units (AUs): start with a "
        "global analysis, then inspect the face region by region, and for each region name "
        "the AUs you see and give the box of that region. Use exactly this format:\n"
        f"{_FORMAT_EXAMPLE}\n"
        f"{coords}\n"
        f"The answer must be exactly one of: {names}."
    )


def zero_shot_instruction(labels: Any) -> str:
    """The zero-shot baseline instruction: no reasoning, just ``<answer> label </answer>``."""
    names = ", ".join(_label_names(labels))
    return (
        f"Which emotion does this face show? Choose exactly one of: {names}.\n"
        "Reply with the label only, in this format: <answer> label </answer>"
    )


def build_messages(
    image: Any,
    labels: Any,
    *,
    grounded: bool = True,
    system: str | None = None,
    family: str | BackboneAdapter | None = None,
    style: str = "full",
) -> list[dict[str, Any]]:
    """Chat messages asking the model to classify the face in ``image``.

    Args:
        image: a PIL image (or HWC array), or ``None`` for an image placeholder part
            (TRL datasets keep images in a separate ``images`` column).
        labels: a ``LabelSpace``, a label-space name (``"rafdb"``) or label names.
        grounded: ask for TAG's AU-grounded trace (``True``) or the zero-shot baseline
            answer only (``False``).
        system: an optional system prompt (else the chat template's default applies).
        family: backbone family or adapter whose box convention the instruction states
            (default :data:`DEFAULT_PROMPT_FAMILY`, 0-1000 relative).
        style: the grounded instruction's style, ``"full"`` or ``"compact"``
            (:data:`PROMPT_STYLES`).

    Returns:
        ``[{"role": "system", ...}?, {"role": "user", "content": [image part, text part]}]``.

    >>> msgs = build_messages(None, ["happiness", "sadness"], grounded=False)
    >>> [p["type"] for p in msgs[-1]["content"]]
    ['image', 'text']
    """
    if grounded:
        text = grounded_instruction(
            labels, family=family, image_size=_image_size(image), style=style
        )
    else:
        text = zero_shot_instruction(labels)
    image_part: dict[str, Any] = {"type": "image"}
    if image is not None:
        image_part["image"] = image
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append({"role": "user", "content": [image_part, {"type": "text", "text": text}]})
    return messages


def build_prompt_text(
    processor: Any, messages: list[dict[str, Any]], add_generation_prompt: bool = True
) -> str:
    """Render ``messages`` with the processor's chat template (text only, not tokenized).

    The image parts become the family's vision placeholder (``<|vision_start|><|image_pad|>
    <|vision_end|>``); the processor expands it when called with the image.
    """
    template_owner = processor if getattr(processor, "chat_template", None) else None
    if template_owner is None:
        tok = getattr(processor, "tokenizer", None)
        if tok is not None and getattr(tok, "chat_template", None):
            template_owner = tok
    if template_owner is None:
        raise ValueError(
            f"{type(processor).__name__} has no chat template; pass a processor loaded from a "
            "checkpoint that ships one, or one built by make_tiny_vlm"
        )
    return template_owner.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
