"""Linear read-outs of a frozen vision tower: what its visual tokens make readable.

The demo's SFT keeps the vision tower and merger frozen, so the language model only ever sees
the merged visual tokens. Ridge regressions fitted on the training faces' tokens (flattened,
``[N, T * H]``) tell how much of the class, the detector's AU set and the AU boxes those tokens
carry in a linearly readable form, scored on the held-out faces with the demo's own metrics.
A language model is not limited to a linear read-out, so these are reference points, not bounds;
they show whether a gap lies in the tower (the features) or in the language model (the reading).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__: list[str] = []

_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def tower_features(model: Any, processor: Any, images: Sequence[Any], batch: int = 64) -> Any:
    """Merged visual tokens of ``images``, flattened: ``np.ndarray[N, T * H]`` float32."""
    import torch

    ip, visual, out = processor.image_processor, model.model.visual, []
    with torch.inference_mode():
        for s in range(0, len(images), batch):
            chunk = list(images[s : s + batch])
            enc = ip(images=chunk, return_tensors="pt")
            f = visual(enc["pixel_values"], grid_thw=enc["image_grid_thw"]).pooler_output
            out.append(f.reshape(len(chunk), -1).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def ridge(x: np.ndarray, y: np.ndarray, val_fraction: float = 0.2) -> Any:
    """Ridge regression ``x [N, D] -> y [N, K]``; the penalty is picked on the last
    ``val_fraction`` of the rows (relative to the mean feature variance), then refitted on all.
    Returns ``predict(x_new) -> [M, K]``.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def fit(a: np.ndarray, b: np.ndarray, lam: float) -> Any:
        mu, ym = a.mean(0), b.mean(0)
        ac = a - mu
        # the dual form when there are fewer rows than features
        scale = max(float((ac**2).sum()) / max(1, ac.size), 1e-12)
        if len(a) < a.shape[1]:
            alpha = np.linalg.solve(ac @ ac.T + lam * scale * len(a) * np.eye(len(a)), b - ym)
            w = ac.T @ alpha
        else:
            w = np.linalg.solve(
                ac.T @ ac + lam * scale * len(a) * np.eye(a.shape[1]), ac.T @ (b - ym)
            )
        return lambda z: (np.asarray(z, np.float64) - mu) @ w + ym

    n_val = int(len(x) * val_fraction)
    lam = _LAMBDAS[len(_LAMBDAS) // 2]
    if n_val >= 2 and len(x) - n_val >= 2:
        err = [
            float(((fit(x[:-n_val], y[:-n_val], lam_)(x[-n_val:]) - y[-n_val:]) ** 2).mean())
            for lam_ in _LAMBDAS
        ]
        lam = _LAMBDAS[int(np.argmin(err))]
    return fit(x, y, lam)


def mean_boxes(activated: Sequence[Sequence[dict]]) -> dict[int, np.ndarray]:
    """Per AU, the mean of its detector boxes over ``activated`` (one entry list per face)."""
    boxes: dict[int, list] = {}
    for act in activated:
        for r in act:
            boxes.setdefault(int(r["au"]), []).append(r["box"])
    return {a: np.mean(b, axis=0) for a, b in boxes.items()}


def linear_probe_scores(
    train_x: np.ndarray,
    train_landmarks: np.ndarray,
    train_activated: Sequence[Sequence[dict]],
    train_labels: Sequence[str],
    eval_x: np.ndarray,
    eval_activated: Sequence[Sequence[dict]],
    eval_labels: Sequence[str],
    image_size: tuple[float, float],
) -> dict[str, float]:
    """Score linear read-outs of features on held-out faces with the demo's metrics.

    Args:
        train_x, eval_x: ``[N, D]`` features (e.g. :func:`tower_features`).
        train_landmarks: ``[N, 68, 2]`` pixel landmarks of the training faces.
        train_activated, eval_activated: per face, the detector's entries ``{"au", "box"}``.
        train_labels, eval_labels: the class names.
        image_size: ``(w, h)`` of every face.

    Returns:
        ``accuracy`` (class, argmax of a one-hot ridge), ``au_recall`` (share of the eval
        detector entries whose AU is among the face's top-``k`` ridge AU scores, ``k`` = the
        number of entries), ``box_iou`` (IoU of the region box from ridge-predicted landmarks
        with the detector box, AU given), ``mean_iou`` (the demo's goal metric: ``box_iou``
        where the AU is recalled, else 0), and two label-only references with the true class
        given: ``class_top_au_recall`` (the class's most frequent training AUs) and
        ``class_mean_box_mean_iou`` (those AUs with their mean training boxes).
    """
    from tag_kernels import IBUG68_REGIONS, elementwise_box_iou, landmarks_to_regions

    train_x, eval_x = np.asarray(train_x, np.float32), np.asarray(eval_x, np.float32)
    lms = np.asarray(train_landmarks, np.float32)
    n, n_eval = len(train_x), len(eval_x)
    if lms.shape != (n, 68, 2) or eval_x.shape[1:] != train_x.shape[1:]:
        raise ValueError(
            f"linear_probe_scores: train_landmarks must be [{n}, 68, 2] and eval_x [M, "
            f"{train_x.shape[1]}]; got {lms.shape} and {eval_x.shape}"
        )
    classes = sorted(set(train_labels))
    aus = sorted({int(r["au"]) for act in train_activated for r in act})
    onehot = np.asarray([[c == lab for c in classes] for lab in train_labels], np.float64)
    multihot = np.zeros((n, len(aus)))
    for i, act in enumerate(train_activated):
        for r in act:
            multihot[i, aus.index(int(r["au"]))] = 1.0
    cls_pred = ridge(train_x, onehot)(eval_x).argmax(1)
    acc = float(np.mean([classes[c] == lab for c, lab in zip(cls_pred, eval_labels, strict=True)]))
    au_scores = ridge(train_x, multihot)(eval_x)
    lm_pred = ridge(train_x, lms.reshape(n, -1))(eval_x).reshape(n_eval, 68, 2)
    sizes = np.tile(np.asarray(image_size, np.float32), (n_eval, 1))
    boxes = np.asarray(landmarks_to_regions(lm_pred.astype(np.float32), sizes))

    # label-only references: the class's most frequent AUs, with their mean training boxes
    by_class: dict[str, Counter] = {c: Counter() for c in classes}
    for act, lab in zip(train_activated, train_labels, strict=True):
        by_class[lab].update(int(r["au"]) for r in act)
    mean_box = mean_boxes(train_activated)

    found, cls_found, probe_box, cls_box, ref_box = [], [], [], [], []
    for i, act in enumerate(eval_activated):
        k = len(act)
        if not k:
            continue
        top = {aus[j] for j in np.argsort(-au_scores[i], kind="stable")[:k]}
        cls_top = {a for a, _ in by_class.get(eval_labels[i], Counter()).most_common(k)}
        for r in act:
            au = int(r["au"])
            found.append(au in top)
            cls_found.append(au in cls_top)
            probe_box.append(boxes[i, IBUG68_REGIONS.region_of(au)])
            cls_box.append(mean_box[au] if au in cls_top else np.zeros(4))
            ref_box.append(r["box"])
    f, cf = np.asarray(found, bool), np.asarray(cls_found, bool)
    if not f.size:
        raise ValueError("linear_probe_scores: the eval faces have no detector entries")
    ref = np.asarray(ref_box, np.float32)
    v = np.asarray(elementwise_box_iou(np.asarray(probe_box, np.float32), ref), np.float64)
    cv = np.where(
        cf, np.asarray(elementwise_box_iou(np.asarray(cls_box, np.float32), ref), np.float64), 0.0
    )
    return {
        "accuracy": acc,
        "au_recall": float(f.mean()),
        "box_iou": float(v.mean()),
        "mean_iou": float(np.where(f, v, 0.0).mean()),
        "class_top_au_recall": float(cf.mean()),
        "class_mean_box_mean_iou": float(cv.mean()),
    }
