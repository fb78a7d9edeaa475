"""Stage 2 of pretraining: grounding questions and answers, and their greedy evaluation.

The analogue of a real backbone's grounding pretraining ("Where is the brow?
<bbox>[...]</bbox>"), in the model's own coordinate convention (Qwen2-VL: 0..1000). Two kinds
of question, drawn per face:

* ``aus``: "Which Action Units are active? Ground each one." The answer lists the geometric
  detector's activated AUs (the same top-k and threshold as the trace builder) with their
  region boxes, one per line, then ``Expression: <label>.``; a face with none says so.
* ``regions``: "Where are the <r1>, the <r2> and the <r3>?" for three of the 12 iBUG-68
  regions, answered with one box per line (every region, active or not).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["AUS_QUESTION", "parse_qa", "qa_rows", "qa_scores", "render_faces"]

AUS_QUESTION = "Which Action Units are active? Ground each one."
_NONE = "None: the muscles are at rest."
#: the columns of :func:`qa_rows`
_COLUMNS = ("image", "label", "kind", "prompt", "trace", "activated", "regions")
_LINE = re.compile(r"^\s*(AU(\d+)|([a-z][a-z ]*?))\s*<bbox>\[([^\]]*)\]</bbox>\s*$")


def _region_name(name: str) -> str:
    return name.replace("_", " ")


def render_faces(
    seed: int,
    start: int,
    n: int,
    *,
    size: int,
    labels: Sequence[str],
    variation: float,
    progress: bool = True,
    desc: str = "faces",
) -> tuple[list[Any], list[str], np.ndarray]:
    """SynthFACS faces ``start .. start + n`` of ``seed``: ``(images, labels, landmarks)``."""
    from tag_model.synth import SynthFACS
    from tqdm.auto import tqdm

    gen = SynthFACS(size=size, seed=seed, labels=labels, variation=variation)
    images, ys, lms = [], [], []
    for i in tqdm(range(start, start + n), desc=desc, disable=not progress):
        s = gen.sample(i)
        images.append(s.image)
        ys.append(s.label)
        lms.append(np.asarray(s.landmarks, dtype=np.float32))
    return images, ys, np.stack(lms) if lms else np.zeros((0, 68, 2), np.float32)


def _fmt(box: Sequence[float]) -> str:
    return "<bbox>[" + ",".join(str(int(v)) for v in box) + "]</bbox>"


def qa_rows(
    images: list[Any],
    labels: list[str],
    landmarks: np.ndarray,
    adapter: Any,
    *,
    seed: int,
    top_k: int = 3,
    threshold: float = 0.5,
    aus_share: float = 0.5,
) -> dict[str, list[Any]]:
    """Columns of the QA dataset (``image``, ``label``, ``kind``, ``prompt``, ``trace``,
    ``activated``, ``regions``): the ``prompt``/``trace`` pair is what ``tag-train sft``
    trains on; ``activated`` (pixels) and ``regions`` (names and pixel boxes asked) are the
    references its evaluation scores against."""
    from tag_kernels import IBUG68_REGIONS, landmarks_to_regions
    from tag_model.activation import build_activated_lists
    from tag_model.detectors import GeometricAUDetector

    if not len(images):
        return {k: [] for k in _COLUMNS}
    rng = np.random.default_rng(seed)
    sizes = np.asarray([im.size for im in images], dtype=np.float32)
    lm = np.ascontiguousarray(landmarks, dtype=np.float32)
    probs = GeometricAUDetector().predict_dicts(lm)
    acts = build_activated_lists(lm, sizes, probs, top_k=top_k, threshold=threshold)
    regions = np.asarray(landmarks_to_regions(lm, sizes))  # [N, 12, 4] pixels
    names = [_region_name(r.name) for r in IBUG68_REGIONS.regions]
    cols: dict[str, list[Any]] = {k: [] for k in _COLUMNS}
    for i, (im, y, act) in enumerate(zip(images, labels, acts, strict=True)):
        wh = (im.size[0], im.size[1])
        activated = [{"au": int(a.au), "prob": float(a.prob), "box": list(a.box)} for a in act]
        if rng.random() < aus_share:
            kind, q = "aus", AUS_QUESTION
            if act:
                boxes = adapter.from_pixels(
                    np.asarray([a.box for a in act], np.float32), wh, round_to_int=True
                )
                lines = [f"AU{a.au} {_fmt(b)}" for a, b in zip(act, np.asarray(boxes), strict=True)]
            else:
                lines = [_NONE]
            answer = "\n".join([*lines, f"Expression: {y}."])
            asked: list[dict[str, Any]] = []
        else:
            kind = "regions"
            pick = rng.choice(len(names), size=3, replace=False)
            q = f"Where are the {names[pick[0]]}, the {names[pick[1]]} and the {names[pick[2]]}?"
            boxes = np.asarray(adapter.from_pixels(regions[i, pick], wh, round_to_int=True))
            answer = "\n".join(f"{names[r]} {_fmt(b)}" for r, b in zip(pick, boxes, strict=True))
            asked = [{"name": names[r], "box": regions[i, r].tolist()} for r in pick]
        cols["image"].append(im)
        cols["label"].append(y)
        cols["kind"].append(kind)
        cols["prompt"].append([{"role": "user", "content": q}])
        cols["trace"].append(answer)
        cols["activated"].append(activated)
        cols["regions"].append(asked)
    return cols


def parse_qa(text: str) -> tuple[dict[str, list[float]], str | None]:
    """An answer -> ``({"AU12" or region name: model-space box}, expression or None)``.
    Lines that do not parse are ignored (they score as missing)."""
    found: dict[str, list[float]] = {}
    expression = None
    for line in text.splitlines():
        if line.strip().startswith("Expression:"):
            expression = line.split(":", 1)[1].strip().rstrip(".").strip() or None
            continue
        m = _LINE.match(line)
        if not m:
            continue
        try:
            box = [float(v) for v in m.group(4).split(",")]
        except ValueError:
            continue
        if len(box) == 4:
            found.setdefault(m.group(1).strip(), box)
    return found, expression


def _box_iou(
    model_box: Sequence[float] | None, ref_px: Sequence[float], wh: tuple[int, int], adapter: Any
) -> float:
    """IoU of an answered box (model space; ``None``: not answered, 0) with a pixel box."""
    if model_box is None:
        return 0.0
    from tag_kernels import elementwise_box_iou

    px = np.asarray(adapter.to_pixels(np.asarray([model_box], np.float32), wh), np.float32)
    return float(np.asarray(elementwise_box_iou(px, np.asarray([ref_px], np.float32)))[0])


def qa_scores(texts: Sequence[str], rows: dict[str, list[Any]], adapter: Any) -> dict[str, float]:
    """Greedy answers against the references of :func:`qa_rows`.

    ``region_iou``: mean IoU of each asked region's box (0 when missing); ``au_mean_iou``:
    the demo's mean IoU (each detector AU's box IoU, 0 when the AU is not named);
    ``au_precision`` / ``au_recall``: named AUs against the detector's; ``expression``:
    accuracy of the ``Expression:`` line. Each over the questions of its kind.
    """
    reg, au_iou, named, right, expected, expr = [], [], 0, 0, 0, []
    for text, kind, im, act, asked, y in zip(
        texts,
        rows["kind"],
        rows["image"],
        rows["activated"],
        rows["regions"],
        rows["label"],
        strict=True,
    ):
        found, e = parse_qa(text)
        wh = (im.size[0], im.size[1])
        if kind == "regions":
            reg += [_box_iou(found.get(r["name"]), r["box"], wh, adapter) for r in asked]
            continue
        expr.append(e == y)
        aus = {k for k in found if k.startswith("AU")}
        ref = {f"AU{a['au']}" for a in act}
        named += len(aus)
        right += len(aus & ref)
        expected += len(ref)
        au_iou += [_box_iou(found.get(f"AU{a['au']}"), a["box"], wh, adapter) for a in act]
    return {
        "region_iou": float(np.mean(reg)) if reg else 0.0,
        "au_mean_iou": float(np.mean(au_iou)) if au_iou else 0.0,
        "au_precision": right / named if named else 0.0,
        "au_recall": right / expected if expected else 0.0,
        "expression": float(np.mean(expr)) if expr else 0.0,
    }
