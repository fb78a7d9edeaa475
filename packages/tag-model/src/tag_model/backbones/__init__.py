"""VLM backbones for TAG: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, InternVL, LLaVA-OneVision, Gemma 3
and SmolVLM.

- :func:`load_backbone` loads a checkpoint (local folder or hub id) through the
  transformers Auto classes and returns ``(model, processor, adapter)``.
- :class:`BackboneAdapter` (:func:`get_adapter`) converts boxes between the family's text
  coordinate space and image pixels (0-1000 relative for Qwen2-VL / Qwen3-VL and the four
  tiling families; pixels of the resized input for Qwen2.5-VL), and reports how the
  family's processor tiles an image (:meth:`BackboneAdapter.tile_grid`).
- :func:`build_messages` / :func:`build_prompt_text` build the grounded (or zero-shot)
  prompt with the image and the label set.
- :func:`freeze_for_training` applies the freezing policy (vision frozen; projector and
  language model train; optional LoRA) and reports parameter counts.
- :func:`make_tiny_vlm` builds a tiny random model, tokenizer and processor offline.
- :class:`TagSettings` (:func:`save_tag_settings` / :func:`load_tag_settings`): the TAG
  settings a checkpoint was trained with (``tag_settings.json``: family, coordinate space,
  label set, prompt style, detector); :func:`checkpoint_kind` tells a full checkpoint from a
  LoRA adapter folder (which :func:`load_backbone` also loads).

Importing this package is cheap: transformers, peft and torch load on first use.
"""

from ._coords import BackboneAdapter, get_adapter
from ._families import (
    FAMILIES,
    QWEN_FAMILIES,
    FamilySpec,
    UnknownFamilyError,
    detect_family,
    family_spec,
    resolve_family,
)
from ._freeze import (
    PARTS,
    LoraSpec,
    ParamReport,
    PartCount,
    freeze_for_training,
    lora_config_for,
    param_report,
    part_of,
)
from ._generate import generate_completions
from ._loading import (
    SHIPPED_BACKBONES,
    BackboneNotFoundError,
    adapter_base_model,
    load_backbone,
    shipped_backbone_path,
)
from ._prompts import (
    DEFAULT_PROMPT_FAMILY,
    PROMPT_STYLES,
    build_messages,
    build_prompt_text,
    grounded_instruction,
    zero_shot_instruction,
)
from ._settings import (
    SETTINGS_FILE,
    TagSettings,
    checkpoint_kind,
    load_tag_settings,
    save_tag_settings,
)
from ._tiny import (
    TINY_SPECIAL_TOKENS,
    build_tiny_tokenizer,
    load_processor,
    make_tiny_vlm,
    qwen_chat_template,
    tokenizer_corpus,
)

__all__ = [
    "DEFAULT_PROMPT_FAMILY",
    "FAMILIES",
    "PARTS",
    "PROMPT_STYLES",
    "QWEN_FAMILIES",
    "SETTINGS_FILE",
    "SHIPPED_BACKBONES",
    "TINY_SPECIAL_TOKENS",
    "BackboneAdapter",
    "BackboneNotFoundError",
    "FamilySpec",
    "LoraSpec",
    "ParamReport",
    "PartCount",
    "TagSettings",
    "UnknownFamilyError",
    "adapter_base_model",
    "build_messages",
    "build_prompt_text",
    "build_tiny_tokenizer",
    "checkpoint_kind",
    "detect_family",
    "family_spec",
    "freeze_for_training",
    "generate_completions",
    "get_adapter",
    "grounded_instruction",
    "load_backbone",
    "load_processor",
    "load_tag_settings",
    "lora_config_for",
    "make_tiny_vlm",
    "param_report",
    "part_of",
    "qwen_chat_template",
    "resolve_family",
    "save_tag_settings",
    "shipped_backbone_path",
    "tokenizer_corpus",
    "zero_shot_instruction",
]
