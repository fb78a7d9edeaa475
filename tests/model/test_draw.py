"""Drawing AU boxes: the PNG is written and pixels change inside the boxes only."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from tag_model.activation import ActivatedAU
from tag_model.draw import GREEN, RED, draw_au_boxes, draw_grounding
from tag_model.synth import SynthFACS


@pytest.fixture(scope="module")
def face():
    return SynthFACS(size=224, seed=4).sample(3).image


def _changed(a: Image.Image, b: Image.Image) -> np.ndarray:
    return (np.asarray(a, np.int16) != np.asarray(b, np.int16)).any(-1)


def test_draw_au_boxes_writes_png_and_changes_box_pixels(face, tmp_path) -> None:
    boxes = [(40.0, 60.0, 120.0, 100.0), (80.0, 150.0, 160.0, 200.0)]
    out = draw_au_boxes(face, boxes, labels=["AU6", "AU12"], color=GREEN)
    path = tmp_path / "boxes.png"
    out.save(path)
    back = Image.open(path).convert("RGB")
    assert back.size == face.size
    ch = _changed(face, back)
    for x1, y1, x2, y2 in boxes:
        inside = ch[int(y1) : int(y2) + 1, int(x1) : int(x2) + 1]
        assert inside[:, 0].all() and inside[0, :].all()  # the outline
        # the outline is the box colour
        assert tuple(np.asarray(back)[int(y2), int(x1) + 5]) == GREEN
    # the label tag sits just above the first box, black with coloured text
    tag = np.asarray(back)[60 - 8 : 60, 41:60]
    assert (tag.sum(-1) == 0).mean() > 0.3 and (np.abs(tag - GREEN).sum(-1) < 60).any()
    # far away from the boxes, nothing changed
    assert not ch[:, 180:].any() and not ch[210:, :].any()
    assert face is not out and np.asarray(face).shape == (224, 224, 3)


def test_skips_invalid_boxes_and_checks_labels(face) -> None:
    out = draw_au_boxes(face, [(10, 10, 5, 5), (np.nan, 0, 10, 10)])
    assert not _changed(face, out).any()
    with pytest.raises(ValueError, match="labels"):
        draw_au_boxes(face, [(1, 1, 5, 5)], labels=["a", "b"])
    arr_out = draw_au_boxes(np.asarray(face), np.array([[20, 20, 60, 60]]), color=RED)
    assert tuple(np.asarray(arr_out)[20, 40]) == RED


def test_draw_grounding_overlay_and_side_by_side(face, tmp_path) -> None:
    pred = [ActivatedAU(12, 0.9, (80.0, 150.0, 160.0, 200.0)), (4, (90.0, 40.0, 130.0, 80.0))]
    ref = {12: (85.0, 155.0, 165.0, 205.0), 17: (95.0, 190.0, 140.0, 222.0)}
    over = draw_grounding(face, pred, ref)
    assert over.size == face.size
    px = np.asarray(over)
    assert (np.abs(px - GREEN).sum(-1) == 0).any() and (np.abs(px - RED).sum(-1) == 0).any()
    assert tuple(px[175, 80]) == GREEN and tuple(px[205, 120]) == RED
    side = draw_grounding(face, pred, ref, layout="side_by_side", gap=10)
    side.save(tmp_path / "grounding.png")
    assert side.size == (2 * 224 + 10, 224)
    sp = np.asarray(side)
    assert tuple(sp[175, 80]) == GREEN and tuple(sp[180, 224 + 10 + 85]) == RED
    with pytest.raises(ValueError, match="layout"):
        draw_grounding(face, pred, ref, layout="grid")  # type: ignore[arg-type]


def test_trace_steps_with_several_aus_are_labelled(face) -> None:
    class Step:
        aus = (4, 9)
        box = (60.0, 40.0, 160.0, 90.0)

    out = draw_grounding(face, [Step()], [])
    assert _changed(face, out)[40, 60:160].all()


def test_labels_of_overlapping_boxes_do_not_cover_each_other() -> None:
    """Several AUs on one box, or boxes that overlap: each label tag gets a free spot."""
    from tag_model.draw import _label_position

    placed: list[tuple[float, float, float, float]] = []
    boxes = [(40, 40, 120, 90)] * 3 + [(45, 42, 125, 95), (0, 0, 30, 20)]
    for box in boxes:
        x, y = _label_position(box, (30, 12), (200, 160), 2, placed)
        assert 0 <= x <= 200 - 30 and 0 <= y <= 160 - 12
        for a, b, c, d in placed:
            assert x >= c or x + 30 <= a or y >= d or y + 12 <= b, (box, (x, y), placed)
        placed.append((x, y, x + 30, y + 12))
    # the first tag sits above its box's top-left corner, as before
    assert placed[0][:2] == (40, 28)
    img = draw_au_boxes(
        np.zeros((160, 200, 3), np.uint8),
        np.array(boxes, np.float32),
        ["AU12", "AU25", "AU26", "AU6", "AU1"],
    )
    assert img.size == (200, 160)
