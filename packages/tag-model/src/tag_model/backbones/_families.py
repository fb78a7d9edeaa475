"""The registry of supported VLM backbone families.

A *family* is one architecture line whose checkpoints share a ``model_type`` in
``config.json``, a processor class and a coordinate convention for boxes written
in text. This module holds only plain data; nothing here imports transformers.

Box conventions (``coord_space``, ``native_box``) and where they come from:

- Qwen2-VL: ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` on a 0-1000 grid relative to the
  image (Qwen2-VL report, arXiv:2409.12191, sec. 2.2). TAG writes ``<bbox>[...]</bbox>``.
- Qwen2.5-VL: absolute pixels of the resized input (Qwen2.5-VL report, arXiv:2502.13923,
  sec. 2.1 "native resolution" grounding), JSON ``bbox_2d``.
- Qwen3-VL: 0-1000 relative (Qwen3-VL model card, "grounding" cookbook).
- InternVL (2.x / 3.x): ``<ref>obj</ref><box>[[x1, y1, x2, y2]]</box>`` on a 0-1000 grid
  relative to the original image, whatever the dynamic tiling (InternVL 1.5 / 2 reports,
  arXiv:2404.16821, "grounding" data format; the InternVL docs' "Grounding" examples).
  ``parse_trace`` / ``parse_batch`` accept that syntax as well as TAG's.
- LLaVA-OneVision: no native grounding format is defined (the LLaVA-OneVision report,
  arXiv:2408.03326, and the transformers docs of ``LlavaOnevision*`` give none; LLaVA-1.5
  wrote RefCOCO boxes as bare [0, 1] floats, which OneVision's card does not adopt). TAG's
  ``<bbox>[x1,y1,x2,y2]</bbox>`` in 0-1000 relative coordinates is used.
- Gemma 3: no native grounding format (Gemma 3 technical report, arXiv:2503.19786, and the
  transformers ``Gemma3`` docs define none; PaliGemma's ``<locNNNN>`` tokens belong to
  another family). TAG's ``<bbox>`` in 0-1000 relative coordinates is used.
- SmolVLM (Idefics3 architecture): no native grounding format (SmolVLM report,
  arXiv:2504.05299, and the transformers ``SmolVLM`` docs define none). TAG's ``<bbox>`` in
  0-1000 relative coordinates is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "FAMILIES",
    "QWEN_FAMILIES",
    "CoordSpace",
    "FamilySpec",
    "UnknownFamilyError",
    "detect_family",
    "family_spec",
    "resolve_family",
]

CoordSpace = Literal["relative_1000", "absolute_resized"]


@dataclass(frozen=True)
class FamilySpec:
    """Static facts about one backbone family.

    Attributes:
        name: the canonical family name, equal to the checkpoints' ``config.model_type``.
        display_name: the human name (``"Qwen2.5-VL"``).
        coord_space: ``"relative_1000"`` (boxes in 0-1000 relative to the image) or
            ``"absolute_resized"`` (boxes in pixels of the resized model input).
        example_checkpoint: a hub id used in help messages.
        config_class / model_class / processor_class / video_processor_class:
            names of the transformers classes (looked up lazily).
        patch_size, merge_size, temporal_patch_size: the vision tower's defaults
            for the released checkpoints.
        min_pixels, max_pixels: the released image processors' pixel budget.
        default_system: the system prompt that the family's chat template inserts when
            none is given (``None`` if the template inserts none).
        native_box: how the family writes one box in its own grounding format
            (``None``: it has none and TAG's ``<bbox>[x1,y1,x2,y2]</bbox>`` is used).
        box_source: where the coordinate convention comes from (report, model card, docs).
        tiling: how the processor splits an image (``None``: one resized image, no tiles).
        image_token: the placeholder the chat template writes for an image (the processor
            expands it into the family's image tokens).
    """

    name: str
    display_name: str
    coord_space: CoordSpace
    example_checkpoint: str
    config_class: str
    model_class: str
    processor_class: str
    video_processor_class: str
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    min_pixels: int
    max_pixels: int
    default_system: str | None
    native_box: str | None = None
    box_source: str = ""
    tiling: str | None = None
    image_token: str = "<|image_pad|>"

    @property
    def factor(self) -> int:
        """The side (pixels) that the resized input is a multiple of: ``patch_size * merge_size``."""
        return self.patch_size * self.merge_size


_QWEN_SYSTEM = "You are a helpful assistant."

_SPECS = (
    FamilySpec(
        name="qwen2_vl",
        display_name="Qwen2-VL",
        coord_space="relative_1000",
        example_checkpoint="Qwen/Qwen2-VL-2B-Instruct",
        config_class="Qwen2VLConfig",
        model_class="Qwen2VLForConditionalGeneration",
        processor_class="Qwen2VLProcessor",
        video_processor_class="Qwen2VLVideoProcessor",
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=56 * 56,
        max_pixels=28 * 28 * 1280,
        default_system=_QWEN_SYSTEM,
        native_box="<|box_start|>(x1,y1),(x2,y2)<|box_end|>",
        box_source="Qwen2-VL report (arXiv:2409.12191), sec. 2.2",
    ),
    FamilySpec(
        name="qwen2_5_vl",
        display_name="Qwen2.5-VL",
        coord_space="absolute_resized",
        example_checkpoint="Qwen/Qwen2.5-VL-3B-Instruct",
        config_class="Qwen2_5_VLConfig",
        model_class="Qwen2_5_VLForConditionalGeneration",
        processor_class="Qwen2_5_VLProcessor",
        video_processor_class="Qwen2VLVideoProcessor",
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=3136,
        max_pixels=12845056,
        default_system=_QWEN_SYSTEM,
        native_box='{"bbox_2d": [x1, y1, x2, y2]}',
        box_source="Qwen2.5-VL report (arXiv:2502.13923), sec. 2.1; Qwen2.5-VL cookbooks",
    ),
    FamilySpec(
        name="qwen3_vl",
        display_name="Qwen3-VL",
        coord_space="relative_1000",
        example_checkpoint="Qwen/Qwen3-VL-2B-Instruct",
        config_class="Qwen3VLConfig",
        model_class="Qwen3VLForConditionalGeneration",
        processor_class="Qwen3VLProcessor",
        video_processor_class="Qwen3VLVideoProcessor",
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=65536,
        max_pixels=16777216,
        default_system=None,
        native_box='{"bbox_2d": [x1, y1, x2, y2]}',
        box_source="Qwen3-VL model card and grounding cookbook (0-1000 relative)",
    ),
    FamilySpec(
        name="internvl",
        display_name="InternVL",
        coord_space="relative_1000",
        example_checkpoint="OpenGVLab/InternVL3-8B-hf",
        config_class="InternVLConfig",
        model_class="InternVLForConditionalGeneration",
        processor_class="InternVLProcessor",
        video_processor_class="InternVLVideoProcessor",
        patch_size=14,
        merge_size=2,  # pixel shuffle, downsample_ratio 0.5
        temporal_patch_size=1,
        min_pixels=448 * 448,
        max_pixels=12 * 448 * 448,
        default_system=None,
        native_box="<box>[[x1, y1, x2, y2]]</box>",
        box_source=(
            "InternVL 1.5/2 report (arXiv:2404.16821) grounding format; InternVL docs, "
            "'Grounding' examples (0-1000 relative to the original image)"
        ),
        tiling="dynamic 448-px tiles (1-12 by aspect ratio) + a thumbnail",
        image_token="<IMG_CONTEXT>",
    ),
    FamilySpec(
        name="llava_onevision",
        display_name="LLaVA-OneVision",
        coord_space="relative_1000",
        example_checkpoint="llava-hf/llava-onevision-qwen2-7b-ov-hf",
        config_class="LlavaOnevisionConfig",
        model_class="LlavaOnevisionForConditionalGeneration",
        processor_class="LlavaOnevisionProcessor",
        video_processor_class="LlavaOnevisionVideoProcessor",
        patch_size=14,
        merge_size=1,
        temporal_patch_size=1,
        min_pixels=384 * 384,
        max_pixels=2304 * 2304,
        default_system=None,
        native_box=None,
        box_source=(
            "none native (LLaVA-OneVision report arXiv:2408.03326, transformers docs); "
            "TAG <bbox> 0-1000 relative"
        ),
        tiling="anyres_max_9: 384-px tiles on the best grid pinpoint + a base image",
        image_token="<image>",
    ),
    FamilySpec(
        name="gemma3",
        display_name="Gemma 3",
        coord_space="relative_1000",
        example_checkpoint="google/gemma-3-4b-it",
        config_class="Gemma3Config",
        model_class="Gemma3ForConditionalGeneration",
        processor_class="Gemma3Processor",
        video_processor_class="",
        patch_size=14,
        merge_size=4,  # 64x64 patches average-pooled to 16x16 = 256 tokens
        temporal_patch_size=1,
        min_pixels=896 * 896,
        max_pixels=896 * 896,
        default_system=None,
        native_box=None,
        box_source=(
            "none native (Gemma 3 report arXiv:2503.19786, transformers docs); "
            "TAG <bbox> 0-1000 relative"
        ),
        tiling="one 896-px square (optional pan-and-scan crops, off by default)",
        image_token="<start_of_image>",
    ),
    FamilySpec(
        name="smolvlm",
        display_name="SmolVLM",
        coord_space="relative_1000",
        example_checkpoint="HuggingFaceTB/SmolVLM2-2.2B-Instruct",
        config_class="SmolVLMConfig",
        model_class="SmolVLMForConditionalGeneration",
        processor_class="SmolVLMProcessor",
        video_processor_class="SmolVLMVideoProcessor",
        patch_size=14,
        merge_size=4,  # pixel shuffle, scale_factor 4
        temporal_patch_size=1,
        min_pixels=384 * 384,
        max_pixels=1536 * 1536,
        default_system=None,
        native_box=None,
        box_source=(
            "none native (SmolVLM report arXiv:2504.05299, transformers docs); "
            "TAG <bbox> 0-1000 relative"
        ),
        tiling="image splitting into 384-px tiles (rows x cols) + a global image",
        image_token="<image>",
    ),
)

#: Canonical family names: the Qwen-VL ones in release order, then ``"internvl"``,
#: ``"llava_onevision"``, ``"gemma3"``, ``"smolvlm"``.
FAMILIES: tuple[str, ...] = tuple(s.name for s in _SPECS)

#: The Qwen-VL families (``smart_resize`` geometry, ``image_grid_thw``).
QWEN_FAMILIES: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

_BY_NAME = {s.name: s for s in _SPECS}


def _normalise(name: str) -> str:
    key = name.strip().lower()
    for ch in "-. /":
        key = key.replace(ch, "_")
    return key


# Spellings people write for the families: "Qwen2.5-VL", "qwen2-vl", "Qwen3VL", ...
_ALIASES: dict[str, str] = {}
for _s in _SPECS:
    _ALIASES[_normalise(_s.name)] = _s.name
    _ALIASES[_normalise(_s.display_name)] = _s.name
    _ALIASES[_normalise(_s.display_name).replace("_", "")] = _s.name
    _ALIASES[_normalise(_s.name).replace("_", "")] = _s.name
# Spellings of the new families: "InternVL3", "LLaVA-OV", "Gemma-3", "Idefics3", ...
_ALIASES.update(
    {
        "internvl2": "internvl",
        "internvl2_5": "internvl",
        "internvl3": "internvl",
        "internvl3_5": "internvl",
        "llava_ov": "llava_onevision",
        "llavaov": "llava_onevision",
        "gemma_3": "gemma3",
        "smolvlm2": "smolvlm",
    }
)


class UnknownFamilyError(ValueError):
    """Raised for a family name or ``model_type`` that TAG has no adapter for."""


def resolve_family(name: str) -> str:
    """Return the canonical family name for ``name`` (a family name, alias or ``model_type``).

    >>> resolve_family("Qwen2.5-VL")
    'qwen2_5_vl'

    Raises:
        UnknownFamilyError: naming the value and listing the known families.
    """
    if not isinstance(name, str):
        raise UnknownFamilyError(
            f"backbone family must be a string, got {type(name).__name__} {name!r}; "
            f"known families: {', '.join(FAMILIES)}"
        )
    key = _normalise(name)
    if key in _ALIASES:
        return _ALIASES[key]
    raise UnknownFamilyError(
        f"unknown backbone family {name!r}; known families: {', '.join(FAMILIES)} "
        f"({', '.join(s.display_name for s in _SPECS)})"
    )


def family_spec(family: str) -> FamilySpec:
    """The :class:`FamilySpec` of ``family`` (any spelling :func:`resolve_family` accepts)."""
    return _BY_NAME[resolve_family(family)]


def detect_family(config: Any) -> str:
    """The TAG family of a transformers config (from ``config.model_type``).

    Raises:
        UnknownFamilyError: for a ``model_type`` TAG has no adapter for, listing the known ones.
    """
    model_type = getattr(config, "model_type", None)
    if model_type is None and isinstance(config, dict):
        model_type = config.get("model_type")
    try:
        return resolve_family(str(model_type))
    except UnknownFamilyError:
        raise UnknownFamilyError(
            f"checkpoint model_type {model_type!r} is not a supported backbone family; "
            f"known families: {', '.join(FAMILIES)}"
        ) from None
