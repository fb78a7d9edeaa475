"""How each family's processor tiles an image (dynamic tiling), with transformers' own functions.

Boxes never refer to a tile: every family TAG supports writes boxes relative to the whole
original image (0-1000) or, for Qwen2.5-VL, in pixels of the one resized input. The tile
layout matters for the image-token budget (sequence length) and for reading a processor's
output, so it is computed here from the processor's settings:

- InternVL (``GotOcr2ImageProcessor``, ``crop_to_patches``): the image is resized to a
  ``cols x rows`` grid of square tiles whose aspect ratio is closest to the image's
  (``get_optimal_tiled_canvas``, ``min_patches <= rows * cols <= max_patches``), plus a
  thumbnail of the whole image when there is more than one tile.
- LLaVA-OneVision (anyres): the grid pinpoint that best fits the image
  (``select_best_resolution``) fixes ``rows x cols`` tiles of the base size; a base image of
  the whole picture comes first.
- SmolVLM (``do_image_splitting``): the longest edge is scaled to ``size["longest_edge"]``,
  each side rounded up to a multiple of ``max_image_size``; ``rows x cols`` tiles plus a
  global image when that gives more than one tile.
- Gemma 3: one square image (pan-and-scan crops are off in the released processors).
- Qwen-VL: one image at its native (``smart_resize``) resolution.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["default_tiling", "tile_grid", "tiling_from_processor"]

_DEFAULTS: dict[str, dict[str, Any]] = {
    # OpenGVLab/InternVL3-*-hf preprocessor_config.json
    "internvl": {"tile": 448, "min_patches": 1, "max_patches": 12, "crop_to_patches": True},
    # llava-hf/llava-onevision-qwen2-*-ov-hf: 384-px SigLIP tiles, the default pinpoints
    "llava_onevision": {"tile": 384, "pinpoints": None},
    # google/gemma-3-*-it: 896 x 896, pan-and-scan off
    "gemma3": {"tile": 896, "pan_and_scan": False},
    # HuggingFaceTB/SmolVLM2-2.2B-Instruct: longest edge 1536, 384-px tiles
    "smolvlm": {"tile": 384, "longest_edge": 1536, "splitting": True},
}


def default_tiling(family: str) -> dict[str, Any]:
    """The released processor's tiling settings of ``family`` (empty for the Qwen families)."""
    return dict(_DEFAULTS.get(family, {}))


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def tiling_from_processor(family: str, processor: Any) -> dict[str, Any]:
    """The tiling settings of ``processor`` (a processor or its image processor)."""
    ip = getattr(processor, "image_processor", processor)
    out = default_tiling(family)
    if family == "internvl":
        size = getattr(ip, "size", None)
        out.update(
            tile=int(_get(size, "height", out["tile"])),
            min_patches=int(getattr(ip, "min_patches", out["min_patches"])),
            max_patches=int(getattr(ip, "max_patches", out["max_patches"])),
            crop_to_patches=bool(getattr(ip, "crop_to_patches", out["crop_to_patches"])),
        )
        # InternVLProcessor turns crop_to_patches on for every call
        images_kwargs = getattr(type(processor), "images_kwargs", None) or {}
        if images_kwargs.get("crop_to_patches"):
            out["crop_to_patches"] = True
    elif family == "llava_onevision":
        size = getattr(ip, "size", None)
        pins = getattr(ip, "image_grid_pinpoints", None)
        out.update(
            tile=int(_get(size, "height", out["tile"])),
            pinpoints=tuple(tuple(int(v) for v in p) for p in pins) if pins else None,
        )
    elif family == "gemma3":
        size = getattr(ip, "size", None)
        out.update(
            tile=int(_get(size, "height", out["tile"])),
            pan_and_scan=bool(getattr(ip, "do_pan_and_scan", False)),
        )
    elif family == "smolvlm":
        size = getattr(ip, "size", None)
        max_size = getattr(ip, "max_image_size", None)
        out.update(
            tile=int(_get(max_size, "longest_edge", out["tile"])),
            longest_edge=int(_get(size, "longest_edge", out["longest_edge"])),
            splitting=bool(getattr(ip, "do_image_splitting", out["splitting"])),
        )
    return out


def _llava_default_pinpoints() -> list[list[int]]:
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    return [list(p) for p in LlavaOnevisionImageProcessorPil.image_grid_pinpoints]


def tile_grid(family: str, settings: dict[str, Any], w: int, h: int) -> tuple[int, int, int]:
    """``(rows, cols, n_images)`` for an image of ``w x h`` pixels.

    ``n_images`` counts every square the vision tower encodes: the tiles plus the thumbnail /
    base / global image. Families without tiling give ``(1, 1, 1)``.
    """
    if family == "internvl":
        if not settings["crop_to_patches"] or settings["max_patches"] <= 1:
            return 1, 1, 1
        from transformers.models.got_ocr2.image_processing_got_ocr2 import (
            get_optimal_tiled_canvas,
        )

        t = settings["tile"]
        cols, rows = get_optimal_tiled_canvas(
            (h, w), (t, t), settings["min_patches"], settings["max_patches"]
        )
        n = rows * cols
        return rows, cols, n + 1 if n > 1 else 1
    if family == "llava_onevision":
        from transformers.image_processing_utils import select_best_resolution

        t = settings["tile"]
        pins = settings["pinpoints"] or _llava_default_pinpoints()
        bh, bw = select_best_resolution((h, w), [list(p) for p in pins])
        rows, cols = bh // t, bw // t
        return rows, cols, rows * cols + 1
    if family == "smolvlm":
        if not settings["splitting"]:
            return 1, 1, 1
        from transformers.models.smolvlm import image_processing_pil_smolvlm as sm

        hh, ww = sm._resize_output_size_rescale_to_max_len(h, w, max_len=settings["longest_edge"])
        hh, ww = sm._resize_output_size_scale_below_upper_bound(hh, ww, max_len=sm.MAX_IMAGE_SIZE)
        t = settings["tile"]
        rh, rw = math.ceil(hh / t) * t, math.ceil(ww / t) * t
        if rh > t or rw > t:
            rows, cols = math.ceil(rh / t), math.ceil(rw / t)
            return rows, cols, rows * cols + 1
        return 1, 1, 1
    return 1, 1, 1
