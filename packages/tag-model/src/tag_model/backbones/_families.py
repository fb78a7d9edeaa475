"""The registry of supported VLM backbone families.

A *family* is one architecture line whose checkpoints share a ``model_type`` in
``config.json``, a processor class and a coordinate convention for boxes written
in text. This module holds only plain data; nothing here imports transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "FAMILIES",
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
    ),
)

#: Canonical family names, in release order: ``("qwen2_vl", "qwen2_5_vl", "qwen3_vl")``.
FAMILIES: tuple[str, ...] = tuple(s.name for s in _SPECS)

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
