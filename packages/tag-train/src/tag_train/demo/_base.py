"""The demo's base model: a tiny Qwen2-VL whose vision tower is warmed up alone, then cached.

A random vision tower gives the language model nothing to learn the class from, so the tower
(+ merger) is first trained as an emotion classifier, landmark regressor and AU detector; this
stands in for the pretrained encoder a real backbone has.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from tag_train.demo._presets import DemoPreset

__all__ = ["base_model"]


def _warmup_faces(ds: Any, preset: DemoPreset, progress: bool) -> tuple[list, list, np.ndarray]:
    """The trace images plus ``preset.warmup_extra`` fresh SynthFACS faces (another seed),
    each also mirrored left-right (landmarks re-indexed with ``IBUG68_MIRROR``).

    The extra faces are rendered in memory only: their label and landmarks are known by
    construction, which is all the tower's warm-up needs (no traces). Mirroring doubles the
    faces for free; no label in the demo is one-sided (contempt would be, so it is not mirrored).
    """
    from PIL import ImageOps
    from tag_model.synth import IBUG68_MIRROR, SynthFACS
    from tqdm.auto import tqdm

    images, labels = list(ds["image"]), list(ds["label"])
    lms = [np.asarray(x, dtype=np.float32) for x in ds["landmarks"]]
    gen = SynthFACS(size=preset.image_size, seed=preset.seed + 10_000, labels=preset.labels)
    for i in tqdm(range(preset.warmup_extra), desc="warm-up faces", disable=not progress):
        smp = gen.sample(i)
        images.append(smp.image)
        labels.append(smp.label)
        lms.append(np.asarray(smp.landmarks, dtype=np.float32))
    for i in range(len(images)):
        if labels[i] == "contempt":
            continue
        im = images[i]
        lm = lms[i][IBUG68_MIRROR].copy()
        lm[:, 0] = im.width - 1 - lm[:, 0]
        images.append(ImageOps.mirror(im))
        labels.append(labels[i])
        lms.append(lm)
    return images, labels, np.stack(lms)


def _vision_warmup(
    model: Any, processor: Any, ds: Any, eval_ds: Any, preset: DemoPreset, progress: bool
) -> dict[str, float]:
    """Train the vision tower (+ merger) alone: emotion, landmarks and AU probabilities.

    Stands in for the pretrained encoder a real backbone has. Three linear heads read the
    merged visual tokens ``Tensor[B, T, H]`` flattened (so they see *where* things are): an
    emotion classifier, a regressor of the 68 landmarks (which fix every AU region box), and
    the geometric AU detector's probabilities on those landmarks (soft BCE targets: the AUs
    the trace builder will ground). Two per-token heads put what the language model needs
    into every token's own content: which grid cell the token is (cross-entropy; the language
    model's attention averages values, which carry no position of their own) and, optionally,
    all 68 landmarks from each token alone. The heads are dropped afterwards. Returns seconds,
    loss and the classifier's accuracy on ``eval_ds`` (held-out faces).
    """
    import torch
    from tag_model.detectors import GeometricAUDetector
    from tqdm.auto import tqdm

    torch.manual_seed(preset.seed)
    visual = model.model.visual
    hidden = model.config.text_config.hidden_size
    label_id = {n: i for i, n in enumerate(preset.labels)}
    ip = processor.image_processor

    def encode(images: list, labels: list, lms: np.ndarray) -> tuple[Any, Any, Any, Any]:
        enc = ip(images=images, return_tensors="pt")
        pix, thw = enc["pixel_values"], enc["image_grid_thw"]
        ys = torch.tensor([label_id[x] for x in labels])
        lm = torch.from_numpy(np.asarray(lms, dtype=np.float32) / preset.image_size)
        return pix.view(len(images), int(thw[0].prod()), -1), thw, ys, lm.reshape(len(ys), -1)

    t0 = time.perf_counter()
    pix, thw, ys, lms = encode(*_warmup_faces(ds, preset, progress))
    epix, ethw, eys, _ = encode(
        list(eval_ds["image"]), list(eval_ds["label"]), np.asarray(list(eval_ds["landmarks"]))
    )
    n_tok = pix.shape[1] // visual.spatial_merge_size**2
    detector = GeometricAUDetector()  # the trace builder's detector: AU targets it would give
    aus = torch.from_numpy(
        detector.predict_batch(lms.numpy().reshape(len(lms), 68, 2) * preset.image_size)
    ).float()
    cls_head = torch.nn.Linear(hidden * n_tok, len(preset.labels))
    lm_head = torch.nn.Linear(hidden * n_tok, lms.shape[1])
    au_head = torch.nn.Linear(hidden * n_tok, aus.shape[1])
    pos_head = torch.nn.Linear(hidden, n_tok)  # per token: which cell am I?
    # per token: where is the face? (only built, and run, when it is weighted)
    tok_lm_head = (
        torch.nn.Linear(hidden, lms.shape[1]) if preset.warmup_token_landmark_weight else None
    )
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
    opt = torch.optim.AdamW(params, lr=preset.warmup_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=preset.warmup_lr, total_steps=max(2, preset.warmup_steps), pct_start=0.1
    )

    def heads(p: Any, grid: Any) -> tuple[Any, ...]:
        feats = visual(p.reshape(-1, p.shape[-1]), grid_thw=grid).pooler_output
        flat = feats.reshape(len(p), n_tok * hidden)
        tok = feats.reshape(len(p), n_tok, hidden)
        tok_lm = tok_lm_head(tok) if tok_lm_head is not None else None
        return cls_head(flat), lm_head(flat), au_head(flat), pos_head(tok), tok_lm

    model.train()
    g = torch.Generator().manual_seed(preset.seed)
    bs = min(preset.warmup_batch, len(ys))
    bar = tqdm(range(preset.warmup_steps), desc="vision warm-up", disable=not progress)
    loss = torch.tensor(0.0)
    cells = torch.arange(n_tok).repeat(bs)
    F = torch.nn.functional
    for _step in bar:
        idx = torch.randint(0, len(ys), (bs,), generator=g)
        logits, lm_pred, au_logits, cell_logits, tok_lm = heads(pix[idx], thw[idx])
        loss = (
            F.cross_entropy(logits, ys[idx])
            + preset.warmup_landmark_weight * F.mse_loss(lm_pred, lms[idx])
            + preset.warmup_au_weight * F.binary_cross_entropy_with_logits(au_logits, aus[idx])
            + preset.warmup_position_weight * F.cross_entropy(cell_logits.flatten(0, 1), cells)
        )
        if tok_lm is not None:
            target = lms[idx][:, None].expand_as(tok_lm)
            loss = loss + preset.warmup_token_landmark_weight * F.mse_loss(tok_lm, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
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
    }


def base_model(out: Path, traces: Any, eval_ds: Any, preset: DemoPreset, progress: bool) -> dict:
    """The warmed-up tiny VLM saved at ``out`` (model + processor), built unless cached there.

    Returns the warm-up's record (``seconds``, ``loss``, ``eval_accuracy``, ``faces``; also
    ``out/warmup.json``), or ``{}`` for a cached model without one.
    """
    from tag_model.backbones import make_tiny_vlm

    if (out / "config.json").exists():
        return (
            json.loads((out / "warmup.json").read_text()) if (out / "warmup.json").exists() else {}
        )
    model, processor = make_tiny_vlm("qwen2_vl", seed=preset.seed, image_size=preset.image_size)
    info = _vision_warmup(model, processor, traces, eval_ds, preset, progress)
    print(
        f"vision warm-up: {info['seconds']:.1f}s on {info['faces']} faces, tower accuracy on "
        f"held-out faces {info['eval_accuracy']:.2f} (chance {1 / len(preset.labels):.2f})"
    )
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "warmup.json").write_text(json.dumps(info))
    tmp.rename(out)
    return info
