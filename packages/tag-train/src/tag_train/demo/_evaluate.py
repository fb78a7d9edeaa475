"""The demo's evaluation: greedy decoding on held-out faces and the references beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tag_train.demo._presets import PROMPT_STYLE, DemoPreset

__all__ = ["greedy_eval", "mean_box_baseline", "probe_tower", "tower_probes"]


def _iou_stats(
    pred_au: np.ndarray, pred_px: np.ndarray, activated: list[list[dict]]
) -> dict[str, Any]:
    """Box agreement with the detector, over its entries (``pred_px``: ``[B, K, 4]`` pixels).

    ``mean_iou``: mean over detector entries of the best IoU with a predicted box of the same
    AU (0 when the AU is not predicted); ``au_recall``: share of entries whose AU is
    predicted; ``iou_found``: the mean IoU over those entries only. ``per_face_iou``: each
    face's mean over its own entries (``nan`` for a face with none), for bootstrap intervals.
    """
    from tag_kernels import batched_box_iou

    vals, found = [], []
    per_face = np.full(len(activated), np.nan)
    for i, ref in enumerate(activated):
        if not ref:
            continue
        start = len(vals)
        rb = np.asarray([r["box"] for r in ref], dtype=np.float32)[None]
        pb = pred_px[i][None].astype(np.float32)
        iou = np.asarray(batched_box_iou(pb, rb))[0]  # [K, M]
        for m, r in enumerate(ref):
            same = pred_au[i] == int(r["au"])
            vals.append(float(iou[same, m].max()) if same.any() else 0.0)
            found.append(bool(same.any()))
        per_face[i] = float(np.mean(vals[start:]))
    v, f = np.asarray(vals), np.asarray(found, dtype=bool)
    return {
        "mean_iou": float(v.mean()) if v.size else 0.0,
        "au_recall": float(f.mean()) if f.size else 0.0,
        "iou_found": float(v[f].mean()) if f.any() else 0.0,
        "per_face_iou": per_face,
    }


def _hallucination(pred_au: np.ndarray, activated: list[list[dict]]) -> np.ndarray:
    """Per face: the share of the AUs it names that the detector does not see (``nan``: none
    named; AU 0, a box that names no AU, is an inspection and no claim)."""
    out = np.full(len(activated), np.nan)
    for i, ref in enumerate(activated):
        named = {int(a) for a in pred_au[i] if a > 0}
        if named:
            seen = {int(r["au"]) for r in ref}
            out[i] = len(named - seen) / len(named)
    return out


def mean_box_baseline(train: Any, test: Any) -> float:
    """IoU of the per-AU mean training box with each test detector box (the AU given).

    What a model that knows which AUs are active but not where the face is would score as
    ``iou_found``: the bar for "reads box positions from the image".
    """
    from tag_kernels import elementwise_box_iou

    from tag_train._probes import mean_boxes

    mean = mean_boxes(train["activated"])
    pairs = [
        (mean[int(r["au"])], r["box"])
        for act in test["activated"]
        for r in act
        if int(r["au"]) in mean
    ]
    if not pairs:
        return 0.0
    iou = elementwise_box_iou(
        np.asarray([p[0] for p in pairs], np.float32), np.asarray([p[1] for p in pairs], np.float32)
    )
    return float(np.asarray(iou, np.float64).mean())


def greedy_eval(
    model: Any,
    processor: Any,
    ds: Any,
    labels: tuple[str, ...],
    max_new_tokens: int,
    progress: bool,
) -> dict[str, Any]:
    """Greedy completions on ``ds`` -> format rate, accuracy, box agreement, grounding reward.

    Box agreement is :func:`_iou_stats`: ``mean_iou``, ``au_recall`` and ``iou_found``.
    ``grounding`` is the mean AU-grounding reward (the grounding F-score; 0 for a trace that
    does not parse) and ``hallucination`` the mean share of named AUs the detector does not
    see. ``per_face`` holds the per-face values behind the means (``correct``, ``grounding``,
    ``mean_iou``, ``hallucination``; ``nan`` where undefined) for bootstrap intervals; it and
    ``completions`` are left out of ``summary.json``.
    """
    from tag_model.backbones import generate_completions, get_adapter
    from tag_model.grounding import parse_batch
    from tqdm.auto import tqdm

    from tag_train.rewards import get_grounding_reward, pb_answer_names

    texts: list[str] = []
    images = list(ds["image"])
    bs = 16
    for s in tqdm(range(0, len(images), bs), desc="greedy eval", disable=not progress):
        texts += generate_completions(
            model,
            processor,
            images[s : s + bs],
            labels,
            family="qwen2_vl",
            max_new_tokens=max_new_tokens,
            do_sample=False,
            style=PROMPT_STYLE,
        )
    pb = parse_batch(texts, labels=labels)
    ok = np.asarray(pb.format_ok, dtype=bool)
    answers = pb_answer_names(pb, labels)
    correct = np.asarray(
        [a == y for a, y in zip(answers, list(ds["label"]), strict=True)], dtype=np.float64
    )
    adapter = get_adapter("qwen2_vl", processor=processor)
    sizes = np.asarray([im.size for im in images], dtype=np.float32)
    pred_au = np.asarray(pb.pred_au)
    px = np.asarray(adapter.to_pixels(np.asarray(pb.pred_boxes, dtype=np.float32), sizes))
    activated = list(ds["activated"])
    g = get_grounding_reward("qwen2_vl", labels=labels, processor=processor)(
        texts, activated=activated, image=images
    )
    stats = _iou_stats(pred_au, np.nan_to_num(px), activated)
    hall = _hallucination(pred_au, activated)
    per_face = {
        "correct": correct,
        "grounding": np.asarray(g, dtype=np.float64),
        "mean_iou": stats.pop("per_face_iou"),
        "hallucination": hall,
    }
    return {
        "format": float(ok.mean()),
        "accuracy": float(correct.mean()),
        **stats,
        "grounding": float(np.mean(g)),
        "hallucination": float(np.nanmean(hall)) if np.isfinite(hall).any() else 0.0,
        "completions": texts,
        "per_face": {k: v.tolist() for k, v in per_face.items()},
    }


def tower_probes(cache: Path, traces: Any, eval_ds: Any, preset: DemoPreset) -> dict:
    """Linear read-outs of the frozen warmed-up tower (``tag_train._probes``), cached."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = cache / "tower_probes.json"
    if path.exists():
        return json.loads(path.read_text())
    model = AutoModelForImageTextToText.from_pretrained(cache / "base").eval()
    processor = AutoProcessor.from_pretrained(cache / "base")
    out = probe_tower(model, processor, traces, eval_ds, preset.image_size)
    path.write_text(json.dumps(out))
    return out


def probe_tower(
    model: Any, processor: Any, traces: Any, eval_ds: Any, image_size: int
) -> dict[str, float]:
    """Linear read-outs of ``model``'s tower tokens fitted on the trace faces and scored on
    ``eval_ds`` (:func:`tag_train._probes.linear_probe_scores`)."""
    from tag_train._probes import linear_probe_scores, tower_features

    return linear_probe_scores(
        tower_features(model, processor, list(traces["image"])),
        np.asarray(list(traces["landmarks"]), np.float32),
        list(traces["activated"]),
        list(traces["label"]),
        tower_features(model, processor, list(eval_ds["image"])),
        list(eval_ds["activated"]),
        list(eval_ds["label"]),
        (image_size, image_size),
    )
