"""Drawing AU boxes and labels on faces (PIL), as in the TAG grounding figure.

Predicted boxes are green and the detector's reference boxes red; each box has its AU
label on a small black tag above its top-left corner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["GREEN", "RED", "draw_au_boxes", "draw_grounding"]

GREEN: tuple[int, int, int] = (40, 220, 40)
RED: tuple[int, int, int] = (220, 30, 30)


def _as_image(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"array images must be uint8 H×W×3, got dtype {arr.dtype}")
    return Image.fromarray(arr).convert("RGB")


def _label_of(aus: Sequence[int]) -> str:
    return " ".join(f"AU{int(a)}" for a in aus if int(a) > 0)


def _items(entries: Any) -> tuple[list[tuple[float, float, float, float]], list[str]]:
    """Boxes and labels from ActivatedAU / TraceStep-like objects, tuples or a dict."""
    boxes: list[tuple[float, float, float, float]] = []
    labels: list[str] = []
    if isinstance(entries, Mapping):
        entries = [(au, box) for au, box in entries.items()]
    for e in entries:
        if hasattr(e, "box"):
            box = e.box
            if hasattr(e, "aus"):
                aus = tuple(e.aus or ())
            else:
                aus = (e.au,) if hasattr(e, "au") else ()
        elif isinstance(e, Sequence) and len(e) in (2, 3):
            aus, box = (e[0],), e[-1]
            if isinstance(e[0], Sequence):
                aus = tuple(e[0])
        else:
            raise ValueError(
                f"cannot read a box from {e!r}; use (au, box), (au, prob, box) or ActivatedAU"
            )
        b = tuple(float(v) for v in box)
        if len(b) != 4:
            raise ValueError(f"a box needs 4 numbers (x1, y1, x2, y2), got {box!r}")
        boxes.append(b)  # type: ignore[arg-type]
        labels.append(_label_of(aus))
    return boxes, labels


def draw_au_boxes(
    image: Any,
    boxes: Iterable[Sequence[float]] | np.ndarray,
    labels: Sequence[str] | None = None,
    color: tuple[int, int, int] = GREEN,
    *,
    width: int | None = None,
    font_size: int | None = None,
) -> Image.Image:
    """A copy of ``image`` with each ``xyxy`` box outlined in ``color`` and labelled.

    Args:
        image: ``PIL.Image`` or ``H×W×3`` uint8 array.
        boxes: ``[N, 4]`` xyxy in image pixels. Non-finite or inverted boxes are skipped.
        labels: ``N`` strings (e.g. ``"AU12"``), drawn in ``color`` on a black tag above the
            box's top-left corner (inside the box when there is no room above); ``None`` or
            ``""`` draws no tag.
        color: RGB outline and text colour.
        width: line width in pixels (default ``max(1, round(min(w, h) / 180))``).
        font_size: label size in pixels (default: a third of the median box width, between
            9 and ``min(w, h) // 30``).
    """
    img = _as_image(image).copy()
    W, H = img.size
    box_list = [
        tuple(float(v) for v in b) for b in np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ]
    lw = int(width) if width else max(1, round(min(W, H) / 180))
    if font_size:
        fs = int(font_size)
    else:
        widths = [b[2] - b[0] for b in box_list if np.isfinite(b).all() and b[2] > b[0]]
        fs = max(9, min(min(W, H) // 30, int(np.median(widths) / 3) if widths else 9))
    font = ImageFont.load_default(size=fs)
    draw = ImageDraw.Draw(img)
    if labels is not None and len(labels) != len(box_list):
        raise ValueError(f"{len(labels)} labels for {len(box_list)} boxes")
    placed: list[tuple[float, float, float, float]] = []
    for i, (x1, y1, x2, y2) in enumerate(box_list):
        if not all(np.isfinite((x1, y1, x2, y2))) or x2 <= x1 or y2 <= y1:
            continue
        draw.rectangle((x1, y1, x2, y2), outline=color, width=lw)
        text = labels[i] if labels is not None else ""
        if text:
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            tw, th = right - left + 2, bottom - top + 2
            tx, ty = _label_position((x1, y1, x2, y2), (tw, th), (W, H), lw, placed)
            placed.append((tx, ty, tx + tw, ty + th))
            draw.rectangle((tx, ty, tx + tw, ty + th), fill=(0, 0, 0))
            draw.text((tx + 1 - left, ty + 1 - top), text, fill=color, font=font)
    return img


def _label_position(
    box: tuple[float, float, float, float],
    size: tuple[float, float],
    image_size: tuple[int, int],
    line_width: int,
    placed: Sequence[tuple[float, float, float, float]] = (),
) -> tuple[float, float]:
    """Top-left corner of a box's label tag that overlaps none of the ``placed`` tags.

    The tag goes above the box's top-left corner (inside the box when there is no room above);
    where that spot is taken (overlapping boxes, or several AUs on one box), it moves down one
    tag height at a time, then to the right, staying inside the image. If every spot is taken
    the first one is used.
    """
    x1, y1, _, _ = box
    tw, th = size
    W, H = image_size
    x0 = min(max(0.0, x1), max(0.0, W - tw))
    y0 = y1 - th if y1 - th >= 0 else y1 + line_width

    def free(x: float, y: float) -> bool:  # no overlap with any placed tag (a, b, c, d)
        return all(x >= c or x + tw <= a or y >= d or y + th <= b for a, b, c, d in placed)

    for dx in range(0, max(1, int(W // max(tw, 1)))):
        x = min(x0 + dx * tw, max(0.0, W - tw))
        y = y0
        while y + th <= H:
            if free(x, y):
                return x, y
            y += th
    return x0, y0


def draw_grounding(
    image: Any,
    predicted: Any,
    reference: Any,
    *,
    layout: Literal["overlay", "side_by_side"] = "overlay",
    predicted_color: tuple[int, int, int] = GREEN,
    reference_color: tuple[int, int, int] = RED,
    gap: int = 16,
) -> Image.Image:
    """Predicted AU boxes (green) against the detector's (red), as in the TAG figure.

    ``predicted`` / ``reference``: iterables of ``ActivatedAU``, trace steps (``.aus`` and
    ``.box``), ``(au, box)`` or ``(au, prob, box)`` tuples, or a dict ``{au: box}``; boxes in
    image pixels. ``layout="overlay"`` draws both on one copy of the image (same size as the
    input); ``"side_by_side"`` puts the predicted panel left and the reference panel right,
    ``gap`` pixels apart, like the paper's figure.
    """
    base = _as_image(image)
    pb, pl = _items(predicted)
    rb, rl = _items(reference)
    if layout == "overlay":
        out = draw_au_boxes(base, rb, rl, reference_color) if rb else base.copy()
        return draw_au_boxes(out, pb, pl, predicted_color) if pb else out
    if layout != "side_by_side":
        raise ValueError(f"layout must be 'overlay' or 'side_by_side', got {layout!r}")
    left = draw_au_boxes(base, pb, pl, predicted_color) if pb else base.copy()
    right = draw_au_boxes(base, rb, rl, reference_color) if rb else base.copy()
    W, H = base.size
    canvas = Image.new("RGB", (2 * W + gap, H), (255, 243, 208))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (W + gap, 0))
    return canvas
