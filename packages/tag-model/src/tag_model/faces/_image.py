"""Image input normalisation shared by the face functions."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

__all__ = ["ImageLike", "to_rgb_uint8"]

ImageLike = Any  # PIL.Image.Image | np.ndarray[H, W, 3] uint8 | np.ndarray[H, W] uint8


def to_rgb_uint8(image: ImageLike) -> np.ndarray:
    """Return ``image`` as a C-contiguous RGB ``uint8`` array ``[H, W, 3]``.

    Accepts a PIL image in any mode (converted to RGB), an RGB ``uint8`` array ``[H, W, 3]``,
    an RGBA ``uint8`` array ``[H, W, 4]`` (alpha dropped) or a grayscale ``uint8`` array
    ``[H, W]`` / ``[H, W, 1]`` (replicated to three channels). Anything else raises
    ``TypeError`` / ``ValueError`` naming what was received: these are caller errors.
    """
    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"))
    elif isinstance(image, np.ndarray):
        arr = image
    else:
        raise TypeError(
            f"expected a PIL image or a numpy uint8 array, got {type(image).__module__}."
            f"{type(image).__qualname__}"
        )
    if arr.dtype != np.uint8:
        raise TypeError(
            f"expected a uint8 image array (RGB, 0-255), got dtype {arr.dtype}; "
            "convert with (img * 255).round().astype(np.uint8) if it is a [0, 1] float image"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(
            f"expected an image array of shape [H, W, 3], [H, W, 4] or [H, W], got {arr.shape}"
        )
    return np.ascontiguousarray(arr)
