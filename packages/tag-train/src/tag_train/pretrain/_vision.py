"""Stage 1 of pretraining: the vision tower (+ merger) learns faces alone.

A random vision tower gives the language model nothing to read, so the tower is first
trained as an emotion classifier, landmark regressor and AU detector, with a per-token head
that tells each visual token which grid cell it is. The heads are dropped afterwards. This is
the stand-in, at nano size, for the pretrained encoder a real backbone ships with.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["VisionWarmup", "mirrored", "vision_warmup"]


@dataclass(frozen=True)
class VisionWarmup:
    """The vision stage's settings (the loss weights multiply each head's loss)."""

    steps: int = 500
    batch: int = 32
    lr: float = 2e-3
    landmark_weight: float = 10.0
    au_weight: float = 1.0
    position_weight: float = 1.0
    token_landmark_weight: float = 0.0
    seed: int = 0


def mirrored(
    images: list[Any], labels: list[str], landmarks: list[np.ndarray]
) -> tuple[list[Any], list[str], list[np.ndarray]]:
    """The faces plus each one mirrored left-right (landmarks re-indexed with
    ``IBUG68_MIRROR``). Contempt, the one one-sided label, is not mirrored."""
    from PIL import ImageOps
    from tag_model.synth import IBUG68_MIRROR

    images, labels, landmarks = list(images), list(labels), list(landmarks)
    for i in range(len(images)):
        if labels[i] == "contempt":
            continue
        im = images[i]
        lm = np.asarray(landmarks[i], dtype=np.float32)[IBUG68_MIRROR].copy()
        lm[:, 0] = im.width - 1 - lm[:, 0]
        images.append(ImageOps.mirror(im))
        labels.append(labels[i])
        landmarks.append(lm)
    return images, labels, landmarks


def vision_warmup(
    model: Any,
    processor: Any,
    faces: tuple[list[Any], list[str], np.ndarray],
    eval_faces: tuple[list[Any], list[str]],
    label_names: tuple[str, ...],
    settings: VisionWarmup,
    *,
    progress: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 500,
) -> dict[str, float]:
    """Train ``model``'s vision tower (+ merger) alone on ``faces``; the rest is untouched.

    Args:
        faces: ``(images, labels, landmarks float[N, 68, 2] in pixels)``; every image has
            the same size (one visual grid).
        eval_faces: ``(images, labels)`` held out, for the classifier's accuracy.
        label_names: the classes of the emotion head.

    Three linear heads read the merged visual tokens ``Tensor[B, T, H]`` flattened (so they
    see *where* things are): the emotion, the 68 landmarks (which fix every AU region box)
    and the geometric AU detector's probabilities on those landmarks (soft BCE targets: the
    AUs the trace builder grounds). A per-token head learns which grid cell each token is
    (the language model's attention averages values, which carry no position of their own);
    optionally another reads all 68 landmarks from each token alone. Returns ``seconds``,
    ``loss``, ``eval_accuracy`` (the classifier on ``eval_faces``), ``faces`` and
    ``resumed_from`` (the step a checkpoint resumed at, else 0).

    With ``checkpoint`` (a file path), the stage saves its whole state there every
    ``checkpoint_every`` steps (the tower, the heads, the optimiser, the schedule and the
    random streams; written atomically). Called again with the same file, it resumes at the
    saved step and ends bit-identical to an uninterrupted run at the same torch thread count.
    A checkpoint of other settings or another data size is refused with an error naming it.
    """
    import torch
    from tag_model.detectors import GeometricAUDetector
    from tqdm.auto import tqdm

    torch.manual_seed(settings.seed)
    visual = model.model.visual
    hidden = model.config.text_config.hidden_size
    label_id = {n: i for i, n in enumerate(label_names)}
    ip = processor.image_processor
    size = faces[0][0].size[0]

    def encode(images: list, labels: list) -> tuple[Any, Any, Any]:
        enc = ip(images=images, return_tensors="pt")
        pix, thw = enc["pixel_values"], enc["image_grid_thw"]
        ys = torch.tensor([label_id[x] for x in labels])
        return pix.view(len(images), int(thw[0].prod()), -1), thw, ys

    t0 = time.perf_counter()
    pix, thw, ys = encode(faces[0], faces[1])
    raw_lm = np.asarray(faces[2], dtype=np.float32)
    lms = torch.from_numpy(raw_lm / size).reshape(len(ys), -1)
    epix, ethw, eys = encode(*eval_faces)
    n_tok = pix.shape[1] // visual.spatial_merge_size**2
    detector = GeometricAUDetector()  # the trace builder's detector: AU targets it would give
    aus = torch.from_numpy(detector.predict_batch(raw_lm)).float()
    cls_head = torch.nn.Linear(hidden * n_tok, len(label_names))
    lm_head = torch.nn.Linear(hidden * n_tok, lms.shape[1])
    au_head = torch.nn.Linear(hidden * n_tok, aus.shape[1])
    pos_head = torch.nn.Linear(hidden, n_tok)  # per token: which cell am I?
    tok_lm_head = torch.nn.Linear(hidden, lms.shape[1]) if settings.token_landmark_weight else None
    for p in visual.parameters():
        p.requires_grad_(True)
    params = [
        *visual.parameters(),
        *cls_head.parameters(),
        *lm_head.parameters(),
        *au_head.parameters(),
        *pos_head.parameters(),
        *(tok_lm_head.parameters() if tok_lm_head is not None else ()),
    ]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=settings.lr, total_steps=max(2, settings.steps), pct_start=0.1
    )

    def heads(p: Any, grid: Any) -> tuple[Any, ...]:
        feats = visual(p.reshape(-1, p.shape[-1]), grid_thw=grid).pooler_output
        flat = feats.reshape(len(p), n_tok * hidden)
        tok = feats.reshape(len(p), n_tok, hidden)
        tok_lm = tok_lm_head(tok) if tok_lm_head is not None else None
        return cls_head(flat), lm_head(flat), au_head(flat), pos_head(tok), tok_lm

    model.train()
    g = torch.Generator().manual_seed(settings.seed)
    bs = min(settings.batch, len(ys))
    loss = torch.tensor(0.0)
    head_mods = {
        "cls": cls_head,
        "lm": lm_head,
        "au": au_head,
        "pos": pos_head,
        **({"tok_lm": tok_lm_head} if tok_lm_head is not None else {}),
    }
    identity = {"settings": asdict(settings), "faces": len(ys), "tokens": n_tok}
    ckpt = Path(checkpoint) if checkpoint is not None else None
    start = 0
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state.get("identity") != identity:
            raise ValueError(
                f"{ckpt}: a vision-stage checkpoint of other settings or data "
                f"({state.get('identity')}, this run: {identity}); remove it to start over"
            )
        visual.load_state_dict(state["visual"])
        for k, m in head_mods.items():
            m.load_state_dict(state["heads"][k])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        g.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        loss = torch.tensor(float(state["loss"]))
        t0 -= float(state["seconds"])  # the stage's time includes the runs before

    def save(step: int) -> None:
        assert ckpt is not None
        tmp = ckpt.with_name(ckpt.name + ".tmp")
        torch.save(
            {
                "identity": identity,
                "step": step,
                "seconds": time.perf_counter() - t0,
                "loss": float(loss.item()),
                "visual": visual.state_dict(),
                "heads": {k: m.state_dict() for k, m in head_mods.items()},
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "generator": g.get_state(),
                "torch_rng": torch.get_rng_state(),
            },
            tmp,
        )
        os.replace(tmp, ckpt)

    bar = tqdm(
        range(start, settings.steps),
        desc="vision warm-up",
        disable=not progress,
        initial=start,
        total=settings.steps,
    )
    cells = torch.arange(n_tok).repeat(bs)
    F = torch.nn.functional
    for step in bar:
        idx = torch.randint(0, len(ys), (bs,), generator=g)
        logits, lm_pred, au_logits, cell_logits, tok_lm = heads(pix[idx], thw[idx])
        loss = (
            F.cross_entropy(logits, ys[idx])
            + settings.landmark_weight * F.mse_loss(lm_pred, lms[idx])
            + settings.au_weight * F.binary_cross_entropy_with_logits(au_logits, aus[idx])
            + settings.position_weight * F.cross_entropy(cell_logits.flatten(0, 1), cells)
        )
        if tok_lm is not None:
            target = lms[idx][:, None].expand_as(tok_lm)
            loss = loss + settings.token_landmark_weight * F.mse_loss(tok_lm, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        done = step + 1
        if ckpt is not None and done % max(1, checkpoint_every) == 0 and done < settings.steps:
            save(done)
    model.eval()
    with torch.no_grad():
        acc = float((heads(epix, ethw)[0].argmax(-1) == eys).float().mean())
    for p in visual.parameters():
        p.requires_grad_(False)
    return {
        "seconds": time.perf_counter() - t0,
        "loss": float(loss.item()),
        "eval_accuracy": acc,
        "faces": len(ys),
        "resumed_from": start,
    }
