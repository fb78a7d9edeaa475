"""Coordinate conventions: boxes in a backbone's text space <-> boxes in image pixels.

- Qwen2-VL and Qwen3-VL write boxes in 0-1000 coordinates relative to the image.
- Qwen2.5-VL writes absolute pixels of the *resized* model input, whose size comes from
  ``smart_resize`` (transformers' own function) with the processor's ``min_pixels``,
  ``max_pixels`` and ``patch_size * merge_size``.
- InternVL writes ``<box>[[x1, y1, x2, y2]]</box>`` on a 0-1000 grid relative to the
  original image; LLaVA-OneVision, Gemma 3 and SmolVLM have no native grounding format and
  use TAG's ``<bbox>[x1,y1,x2,y2]</bbox>`` in the same 0-1000 relative space (sources in
  :mod:`._families`). Their processors tile the image (:mod:`._tiling`), but a box always
  refers to the whole original image, never to a tile, so the conversion depends on the
  original size only.

Everything here is vectorised over leading dimensions and accepts NumPy arrays, torch
tensors or nested lists. Non-finite values stay non-finite (NaN in, NaN out): the
reward treats them as degenerate boxes; nothing here raises on garbage numbers in boxes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ._families import QWEN_FAMILIES, CoordSpace, family_spec
from ._tiling import default_tiling, tile_grid, tiling_from_processor

__all__ = ["BackboneAdapter", "get_adapter"]

ImageSize = Any  # (w, h) pair, or array-like [B, 2] of (w, h) rows

_RELATIVE_SCALE = 1000.0


@functools.cache
def _smart_resize():
    """transformers' ``smart_resize`` for Qwen2-VL-style processors (torchvision-free module)."""
    try:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
    except ImportError:  # older layouts keep it only in the main module
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize
    return smart_resize


def _as_sizes(image_size: ImageSize) -> np.ndarray:
    """``image_size`` as float64 ``[2]`` or ``[B, 2]`` of (w, h); raises on invalid sizes."""
    if _is_torch(image_size):
        arr = image_size.detach().to("cpu").double().numpy()
    else:
        try:
            arr = np.asarray(image_size, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"image_size must be (w, h) or an array [B, 2] of (w, h), got {image_size!r}"
            ) from exc
    if arr.ndim not in (1, 2) or arr.shape[-1] != 2:
        raise ValueError(
            f"image_size must be (w, h) or an array [B, 2] of (w, h), got shape {arr.shape}"
        )
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        raise ValueError(
            f"image_size must hold finite positive (w, h) values, got {arr[bad.any(axis=-1)]!r}"
        )
    return arr


def _is_torch(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "detach")


def _scale_boxes(boxes: Any, factors: np.ndarray) -> Any:
    """Multiply ``boxes[..., 4]`` by per-axis ``factors`` ``[2]`` or ``[B, 2]`` (sx, sy).

    ``factors`` of shape ``[B, 2]`` applies row ``b`` to ``boxes[b, ...]``.
    """
    f4 = np.concatenate([factors, factors], axis=-1)  # (sx, sy, sx, sy)
    if _is_torch(boxes):
        import torch

        t = boxes
        dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
        t = t.to(dtype)
        if t.ndim == 0 or t.shape[-1] != 4:
            raise ValueError(f"boxes must have shape [..., 4], got {tuple(t.shape)}")
        f = torch.as_tensor(f4, dtype=dtype, device=t.device)
        if f.ndim == 2:
            f = _align_batch(f, t.ndim, tuple(t.shape))
        return t * f
    try:
        a = np.asarray(boxes)
        if a.dtype == object or not (
            np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.bool_)
        ):
            a = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"boxes must be numbers with shape [..., 4], got {boxes!r}") from exc
    dtype = np.float64 if a.dtype == np.float64 else np.float32
    a = a.astype(dtype, copy=False)
    if a.ndim == 0 or a.shape[-1] != 4:
        raise ValueError(f"boxes must have shape [..., 4], got {a.shape}")
    f = f4.astype(dtype)
    if f.ndim == 2:
        f = _align_batch(f, a.ndim, a.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        return a * f


def _align_batch(f: Any, ndim: int, shape: tuple[int, ...]) -> Any:
    """Reshape per-image factors ``[B, 4]`` to ``[B, 1, ..., 1, 4]`` for boxes of ``ndim`` dims."""
    if ndim < 2:
        raise ValueError(
            f"image_size with a batch dimension [B, 2] needs boxes [B, ..., 4], got shape {shape}"
        )
    b = f.shape[0]
    if shape[0] not in (b, 1) and b != 1:
        raise ValueError(
            f"image_size has {b} rows but boxes have leading dimension {shape[0]} (shape {shape})"
        )
    return f.reshape((b,) + (1,) * (ndim - 2) + (4,))


def _freeze_settings(settings: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Tiling settings as sorted, hashable ``(key, value)`` pairs."""

    def freeze(v: Any) -> Any:
        if isinstance(v, list | tuple):
            return tuple(freeze(x) for x in v)
        return v

    return tuple(sorted((k, freeze(v)) for k, v in settings.items()))


@dataclass(frozen=True)
class BackboneAdapter:
    """Coordinate conventions and prompt wording of one backbone family.

    Build it with :func:`get_adapter` (optionally from a processor, so that Qwen2.5-VL's
    resized input size follows the processor's ``min_pixels``/``max_pixels``).

    Attributes:
        family: the canonical family name (``"qwen2_5_vl"``).
        coord_space: ``"relative_1000"`` or ``"absolute_resized"``.
        patch_size, merge_size: vision tower geometry; the resized input is a multiple
            of ``patch_size * merge_size`` on each side.
        min_pixels, max_pixels: the image processor's pixel budget.
        tiling: the processor's tiling settings as sorted ``(key, value)`` pairs (empty for
            the Qwen families); see :meth:`tile_grid`.
    """

    family: str
    coord_space: CoordSpace
    patch_size: int
    merge_size: int
    min_pixels: int
    max_pixels: int
    tiling: tuple[tuple[str, Any], ...] = ()

    # ---------------------------------------------------------------- geometry
    @property
    def factor(self) -> int:
        """``patch_size * merge_size``."""
        return self.patch_size * self.merge_size

    def with_processor(self, processor: Any) -> BackboneAdapter:
        """A copy whose geometry follows ``processor`` (a processor or an image processor).

        For the tiling families the tiling settings are taken (tile size, tile limits, grid
        pinpoints, splitting); the pixel budget of the Qwen families does not apply to them.
        """
        if self.family not in QWEN_FAMILIES:
            settings = tiling_from_processor(self.family, processor)
            return replace(self, tiling=_freeze_settings(settings))
        ip = getattr(processor, "image_processor", processor)
        size = getattr(ip, "size", None)
        min_px = max_px = None
        if size is not None:
            get = size.get if hasattr(size, "get") else lambda k, d=None: getattr(size, k, d)
            min_px = get("shortest_edge", None) or get("min_pixels", None)
            max_px = get("longest_edge", None) or get("max_pixels", None)
        min_px = min_px or getattr(ip, "min_pixels", None) or self.min_pixels
        max_px = max_px or getattr(ip, "max_pixels", None) or self.max_pixels
        patch = getattr(ip, "patch_size", None) or self.patch_size
        merge = getattr(ip, "merge_size", None) or self.merge_size
        if isinstance(patch, (list, tuple)):
            patch = patch[0]
        return replace(
            self,
            patch_size=int(patch),
            merge_size=int(merge),
            min_pixels=int(min_px),
            max_pixels=int(max_px),
        )

    @property
    def tiling_settings(self) -> dict[str, Any]:
        """The tiling settings as a dict (empty for the Qwen families)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.tiling}

    def tile_grid(self, image_size: ImageSize) -> Any:
        """``(rows, cols, n_images)`` of the tiles the processor cuts an image into.

        ``n_images`` counts every square the vision tower encodes (tiles plus the thumbnail,
        base or global image). Families without tiling give ``(1, 1, 1)``. Boxes are not
        affected: they refer to the original image.

        Args:
            image_size: ``(w, h)``, or an array ``[B, 2]`` of (w, h) rows.

        Returns:
            A tuple for one size, else an int64 array ``[B, 3]``.
        """
        sizes = _as_sizes(image_size)
        rows = sizes.reshape(-1, 2)
        settings = dict(self.tiling)
        out = np.empty((rows.shape[0], 3), dtype=np.int64)
        cache: dict[tuple[int, int], tuple[int, int, int]] = {}
        for i, (w, h) in enumerate(rows):
            key = (max(1, round(float(w))), max(1, round(float(h))))
            if key not in cache:
                cache[key] = tile_grid(self.family, settings, *key)
            out[i] = cache[key]
        if sizes.ndim == 1:
            return tuple(int(v) for v in out[0])
        return out

    def model_input_size(self, image_size: ImageSize) -> Any:
        """Size ``(w', h')`` of the resized image the vision tower sees (``smart_resize``).

        For the tiling families: the size of the tiled canvas (``cols * tile`` by
        ``rows * tile``; Gemma 3: its one square), without the thumbnail or global image.

        Args:
            image_size: ``(w, h)``, or an array ``[B, 2]`` of (w, h) rows.

        Returns:
            ``(w', h')`` as a tuple of ints for one size, else an int64 array ``[B, 2]``.

        Raises:
            ValueError: for non-positive or non-finite sizes, or an aspect ratio over 200
                (which the Qwen processors refuse as well).
        """
        sizes = _as_sizes(image_size)
        rows = sizes.reshape(-1, 2)
        out = np.empty(rows.shape, dtype=np.int64)
        cache: dict[tuple[int, int], tuple[int, int]] = {}
        for i, (w, h) in enumerate(rows):
            key = (round(float(w)), round(float(h)))
            if key not in cache:
                cache[key] = self._resize_one(*key)
            out[i] = cache[key]
        if sizes.ndim == 1:
            return (int(out[0, 0]), int(out[0, 1]))
        return out

    def _resize_one(self, w: int, h: int) -> tuple[int, int]:
        w, h = max(int(w), 1), max(int(h), 1)
        if self.family not in QWEN_FAMILIES:
            settings = dict(self.tiling)
            rows, cols, _ = tile_grid(self.family, settings, w, h)
            t = int(settings.get("tile", 1))
            return cols * t, rows * t
        if max(w, h) / min(w, h) > 200:
            raise ValueError(
                f"image size (w={w}, h={h}) has aspect ratio over 200, which "
                f"{family_spec(self.family).display_name} processors refuse"
            )
        rh, rw = _smart_resize()(
            h, w, factor=self.factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels
        )
        return int(rw), int(rh)

    # ---------------------------------------------------------------- conversions
    def _pixels_per_unit(self, image_size: ImageSize) -> np.ndarray:
        """Factors (sx, sy), shape ``[2]`` or ``[B, 2]``: image pixels per model-space unit."""
        sizes = _as_sizes(image_size)
        if self.coord_space == "relative_1000":
            return sizes / _RELATIVE_SCALE
        resized = np.asarray(self.model_input_size(sizes.reshape(-1, 2)), dtype=np.float64)
        f = sizes.reshape(-1, 2) / resized
        return f[0] if sizes.ndim == 1 else f

    def to_pixels(self, boxes: Any, image_size: ImageSize) -> Any:
        """Boxes in the model's coordinate space -> boxes in image pixels.

        Args:
            boxes: ``[..., 4]`` xyxy, NumPy, torch or nested lists. With a batched
                ``image_size`` ``[B, 2]``, boxes are ``[B, ..., 4]`` (e.g. ``[B, K, 4]``).
            image_size: ``(w, h)`` of the original image, or ``[B, 2]``.

        Returns:
            The boxes in image pixels, same shape; a torch tensor for torch input
            (float32, or float64 for float64 input), else a NumPy float32/float64 array.
            NaN and inf stay non-finite; nothing is clamped.
        """
        return _scale_boxes(boxes, self._pixels_per_unit(image_size))

    def from_pixels(self, boxes: Any, image_size: ImageSize, *, round_to_int: bool = False) -> Any:
        """Boxes in image pixels -> boxes in the model's coordinate space.

        Args:
            boxes: ``[..., 4]`` xyxy in image pixels (see :meth:`to_pixels` for shapes).
            image_size: ``(w, h)`` of the original image, or ``[B, 2]``.
            round_to_int: round to the nearest integer, as a model writes coordinates
                (non-finite values stay non-finite).
        """
        out = _scale_boxes(boxes, 1.0 / self._pixels_per_unit(image_size))
        if round_to_int:
            out = out.round() if _is_torch(out) else np.round(out)
        return out

    # ---------------------------------------------------------------- wording
    def coordinate_instruction(self, image_size: ImageSize | None = None) -> str:
        """One sentence that tells the model in which space to write boxes."""
        if self.coord_space == "relative_1000":
            return (
                "Write every box as [x1,y1,x2,y2] in relative coordinates from 0 to 1000 "
                "(0,0 is the top-left corner of the image and 1000,1000 the bottom-right), "
                "with x1<x2 and y1<y2."
            )
        text = (
            "Write every box as [x1,y1,x2,y2] in absolute pixel coordinates of the image as "
            "you see it (0,0 is the top-left corner), with x1<x2 and y1<y2."
        )
        if image_size is not None:
            w, h = self.model_input_size(image_size)
            text += f" The image is {w}x{h} pixels."
        return text


def get_adapter(
    family: str,
    *,
    processor: Any | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    patch_size: int | None = None,
    merge_size: int | None = None,
) -> BackboneAdapter:
    """The :class:`BackboneAdapter` of ``family``.

    Args:
        family: a family name or alias (``"qwen2_5_vl"``, ``"Qwen2.5-VL"``).
        processor: take ``min_pixels``/``max_pixels``/``patch_size``/``merge_size`` from this
            processor (or image processor). Explicit keyword values override it.
        min_pixels, max_pixels, patch_size, merge_size: override the released defaults.

    Raises:
        UnknownFamilyError: for a family TAG does not know, listing the known ones.

    >>> ad = get_adapter("qwen2_vl")
    >>> ad.to_pixels([500, 250, 1000, 1000], (640, 480)).tolist()
    [320.0, 120.0, 640.0, 480.0]
    """
    spec = family_spec(family)
    adapter = BackboneAdapter(
        family=spec.name,
        coord_space=spec.coord_space,
        patch_size=spec.patch_size,
        merge_size=spec.merge_size,
        min_pixels=spec.min_pixels,
        max_pixels=spec.max_pixels,
        tiling=_freeze_settings(default_tiling(spec.name)),
    )
    if processor is not None:
        adapter = adapter.with_processor(processor)
    overrides = {
        k: int(v)
        for k, v in dict(
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            patch_size=patch_size,
            merge_size=merge_size,
        ).items()
        if v is not None
    }
    if overrides:
        adapter = replace(adapter, **overrides)
    if adapter.min_pixels <= 0 or adapter.max_pixels < adapter.min_pixels:
        raise ValueError(
            f"need 0 < min_pixels <= max_pixels, got min_pixels={adapter.min_pixels}, "
            f"max_pixels={adapter.max_pixels}"
        )
    if adapter.factor <= 0:
        raise ValueError(
            f"patch_size and merge_size must be positive, got {adapter.patch_size}, "
            f"{adapter.merge_size}"
        )
    return adapter
