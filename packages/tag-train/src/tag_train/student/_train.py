"""``tag-train distill``: train a student on a trace dataset (optax), checkpoint it (orbax),
resume it, and evaluate it on held-out faces."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PRESETS", "DistillArguments", "evaluate_student", "run_distill", "train_step_fn"]


@dataclass
class DistillArguments:
    """Arguments of ``tag-train distill`` (YAML keys have the same names)."""

    output_dir: str | None = field(
        default=None,
        metadata={"help": "Student folder: student.json, checkpoints/, metrics.jsonl, eval.json."},
    )
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "A trace dataset from `tag-train traces` (load_from_disk). Empty with "
            "--preset: a SynthFACS trace dataset is built (and cached) first."
        },
    )
    eval_dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "A held-out trace dataset (default: --eval_fraction of the training one)."
        },
    )
    eval_fraction: float = field(
        default=0.1, metadata={"help": "Hold out this fraction when no eval dataset is given."}
    )
    preset: str | None = field(
        default=None,
        metadata={
            "help": "smoke (48 SynthFACS faces, < 1 min) or demo (the demo's trace recipe on "
            "SynthFACS, 1,200 + 96 faces); fills every option not given.",
            "choices": ["smoke", "demo"],
        },
    )
    labels: str | None = field(
        default=None,
        metadata={
            "help": "Labels (a label space name or a comma list); default: the dataset's "
            "tag_settings.json. Presets: the SynthFACS labels to draw."
        },
    )
    image_size: int = field(default=112, metadata={"help": "Student input side (multiple of 28)."})
    target: str = field(
        default="landmarks",
        metadata={
            "help": "Geometry head: 68 landmarks turned into region boxes by "
            "tag_kernels.landmarks_to_regions, or region boxes directly.",
            "choices": ["landmarks", "boxes"],
        },
    )
    widths: list[int] = field(
        default_factory=lambda: [24, 48, 64],
        metadata={"help": "Channels of the patch stem and the two patch-merging stages."},
    )
    hidden: int = field(default=256, metadata={"help": "Width of the dense trunk."})
    max_steps: int = field(default=3000, metadata={"help": "Optimizer steps."})
    max_seconds: float | None = field(
        default=None,
        metadata={
            "help": "Stop (and save) once training has run this long (seconds). The "
            "learning-rate schedule then follows the clock too, when it is ahead of the steps, "
            "so that it has annealed by the time limit."
        },
    )
    batch_size: int = field(default=64, metadata={"help": "Faces per step."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warm-up steps."})
    emotion_weight: float = field(default=1.0, metadata={"help": "Weight of the emotion loss."})
    au_weight: float = field(default=1.0, metadata={"help": "Weight of the AU loss."})
    landmark_weight: float = field(
        default=20.0, metadata={"help": "Weight of the landmark L1 loss (normalised units)."}
    )
    box_weight: float | None = field(
        default=None,
        metadata={
            "help": "Weight of the region-box L1 loss (normalised units). Default: 20 for "
            "--target boxes; 0 for landmarks (there the loss goes through "
            "landmarks_to_regions, whose gradient takes minutes to compile on a CPU)."
        },
    )
    shift: int = field(
        default=4, metadata={"help": "Augmentation: random translation of up to this many px."}
    )
    scale: float = field(
        default=0.0,
        metadata={
            "help": "Augmentation: random zoom by a factor in [1 - scale, 1 + scale] about the "
            "image centre (edge pixels fill what a zoom-out uncovers)."
        },
    )
    flip: bool = field(
        default=False,
        metadata={
            "help": "Augmentation: mirror half the faces left-right (landmarks re-indexed with "
            "IBUG68_MIRROR; every region of the table is bilateral, so labels and AUs stay)."
        },
    )
    label_smoothing: float = field(
        default=0.0, metadata={"help": "Label smoothing of the emotion cross-entropy."}
    )
    top_k: int | None = field(
        default=None,
        metadata={"help": "Activated-list size (default: the trace build's top_k, else 6)."},
    )
    threshold: float = field(default=0.5, metadata={"help": "AU activation threshold."})
    family: str | None = field(
        default=None,
        metadata={
            "help": "Box convention of rendered traces (default: the dataset's family, else "
            "qwen2_vl)."
        },
    )
    save_steps: int = field(default=500, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept."})
    logging_steps: int = field(default=50, metadata={"help": "Log the losses every N steps."})
    resume: bool = field(
        default=False,
        metadata={"help": "Continue from the last checkpoint in output_dir (same settings)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed (initialisation, batch order)."})
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Presets: where built trace datasets are cached ($TAG_CACHE)."},
    )


#: Options each preset sets unless given explicitly (``n_train``/``n_eval``: faces built).
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "n_train": 48,
        "n_eval": 16,
        "labels": "happiness,sadness,surprise,anger",
        "max_steps": 40,
        "batch_size": 16,
        "save_steps": 20,
        "logging_steps": 10,
        "learning_rate": 2e-3,
        "warmup_steps": 5,
    },
    "demo": {
        "n_train": 1200,
        "n_eval": 96,
        "labels": "rafdb",
        # the schedule's length; on this 2-core CPU the clock ends it first (1,700-2,300
        # steps in 290 s), and the learning rate anneals by then (lr_at)
        "max_steps": 3000,
        "max_seconds": 290.0,
        "learning_rate": 3e-3,
        "weight_decay": 0.05,
        "label_smoothing": 0.1,
        "flip": True,
        "scale": 0.1,
        "batch_size": 64,
        "save_steps": 500,
    },
}


def _labels_of(spec: str | None) -> tuple[str, ...] | None:
    if not spec:
        return None
    if "," in spec:
        return tuple(x.strip() for x in spec.split(",") if x.strip())
    from tag_model.au import get_label_space

    return tuple(get_label_space(spec).names)


def _apply_preset(args: DistillArguments, given: set[str]) -> tuple[DistillArguments, dict]:
    if not args.preset:
        return args, {}
    if args.preset not in PRESETS:
        raise ValueError(f"--preset: unknown preset {args.preset!r}; use {', '.join(PRESETS)}")
    p = dict(PRESETS[args.preset])
    sizes = {"n_train": p.pop("n_train"), "n_eval": p.pop("n_eval")}
    changes = {k: v for k, v in p.items() if k not in given}
    return dataclasses.replace(args, **changes), sizes


def build_synth_traces(
    out: Path, labels: tuple[str, ...], n_train: int, n_eval: int, *, seed: int = 0
) -> tuple[Path, Path]:
    """SynthFACS faces in RAF-DB layout -> template-teacher trace datasets, the demo's recipe
    (compact prompts, top-3 activated list, wording variety 0.3); cached under ``out``."""
    import shutil

    from tag_model.datasets import load_rafdb
    from tag_model.synth import attach_synth_landmarks, write_rafdb_layout

    from tag_train.teachers import TemplateTeacher
    from tag_train.traces import TraceBuildConfig, build_traces

    faces = out / "faces"
    if not (faces / "EmoLabel").exists():
        tmp = faces.with_name("faces.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        write_rafdb_layout(
            tmp,
            n_train + n_eval,
            size=112,
            seed=seed,
            labels=labels,
            test_fraction=n_eval / (n_train + n_eval),
        )
        tmp.rename(faces)
    dirs = []
    for split in ("train", "test"):
        dst = out / f"traces-{split}"
        if not (dst / "state.json").exists():
            ds = attach_synth_landmarks(load_rafdb(faces, split), str(faces))
            build_traces(
                ds,
                TemplateTeacher(seed=seed, variety=0.3, style="compact"),
                dst,
                TraceBuildConfig(
                    family="qwen2_vl",
                    labels=labels,
                    top_k=3,
                    min_face_px=32,
                    use_dlib=False,
                    prompt_style="compact",
                ),
                progress=False,
            )
        dirs.append(dst)
    return dirs[0], dirs[1]


def _trace_build_setting(path: str | os.PathLike[str], key: str) -> Any:
    man = Path(path) / "_build" / "manifest.json"
    if not man.is_file():
        return None
    return json.loads(man.read_text()).get("config", {}).get(key)


# ----------------------------------------------------------------------------- training


def _warp(images: Any, warp: Any) -> Any:
    """``uint8[B, S, S, 3]`` resampled by ``warp[B, 2, S, S]`` (per face, an
    ``[S_out, S_in]`` matrix for x, then one for y) -> ``float32[B, S, S, 3]`` (0-255)."""
    import jax.numpy as jnp

    x = images.astype(jnp.float32)
    x = jnp.einsum("bYy,byxc->bYxc", warp[:, 1], x)
    return jnp.einsum("bXx,byxc->byXc", warp[:, 0], x)


def _loss_fn(model: Any, batch: dict[str, Any], weights: dict[str, float]) -> tuple[Any, Any]:
    import jax
    import jax.numpy as jnp
    import optax

    from tag_train.student._model import region_boxes

    images = batch["images"]
    if "warp" in batch:
        images = _warp(images, batch["warp"])
    raw = model(images)
    logits = raw["emotion_logits"]
    if "soft_label" in batch:
        ce = optax.softmax_cross_entropy(logits, batch["soft_label"]).mean()
    elif weights.get("label_smoothing", 0.0) > 0:
        onehot = jax.nn.one_hot(batch["label"], logits.shape[-1])
        target = optax.smooth_labels(onehot, weights["label_smoothing"])
        ce = optax.softmax_cross_entropy(logits, target).mean()
    else:
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    au = optax.sigmoid_binary_cross_entropy(raw["au_logits"], batch["au"]).mean()
    parts = {"emotion": ce, "au": au}
    total = weights["emotion"] * ce + weights["au"] * au
    if weights["box"] > 0 or model.config.target == "boxes":
        wh = batch["image_size"]
        boxes_px, _ = region_boxes(raw, wh, model.config)
        boxes = boxes_px / jnp.concatenate([wh, wh], axis=-1)[:, None, :]
        bm = batch["box_mask"]
        box = (jnp.abs(boxes - batch["boxes"]).sum(-1) * bm).sum() / jnp.maximum(bm.sum(), 1.0)
        parts["box"] = box
        total = total + weights["box"] * box
    if model.config.target == "landmarks":
        lmm = batch["lm_mask"]
        err = jnp.abs(raw["landmarks"] - batch["landmarks"]).sum(-1).mean(-1)
        lm = (err * lmm).sum() / jnp.maximum(lmm.sum(), 1.0)
        parts["landmarks"] = lm
        total = total + weights["landmarks"] * lm
    parts["loss"] = total
    return total, parts


def train_step_fn(weights: dict[str, float]) -> Callable[..., Any]:
    """A jitted ``step(model, optimizer, batch, lr=None) -> losses`` (updates both in place);
    one per set of loss weights and process, so later runs reuse its compilations. ``lr``, when
    given, is written into the optimizer's injected learning rate (:func:`_optimizer`) first."""
    return _step_fn(tuple(sorted(weights.items())))


@functools.cache
def _step_fn(weights: tuple[tuple[str, float], ...]) -> Callable[..., Any]:
    from flax import nnx

    w = dict(weights)

    def step(model: Any, optimizer: Any, batch: dict[str, Any], lr: Any = None) -> Any:
        if lr is not None:
            _hyperparams(optimizer)["learning_rate"][...] = lr
        grad_fn = nnx.value_and_grad(_loss_fn, has_aux=True)
        (_, parts), grads = grad_fn(model, batch, w)
        optimizer.update(model, grads)
        return parts

    return nnx.jit(step)


@functools.cache
def _optimizer(weight_decay: float) -> Any:
    """AdamW clipped at global norm 1, its learning rate an injected hyperparameter that the
    training loop sets every step (:func:`lr_at`); one object per setting, so that the jitted
    step (whose graph holds it) is reused by later runs in a process."""
    import optax

    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, weight_decay=weight_decay),
    )


def _hyperparams(optimizer: Any) -> Any:
    """The injected hyperparameters of an :func:`_optimizer` optimizer's state."""
    for part in optimizer.opt_state:
        if hasattr(part, "hyperparams"):
            return part.hyperparams
    raise ValueError("the optimizer has no injected hyperparameters")


def lr_at(args: DistillArguments, step: int, seconds: float) -> float:
    """The learning rate of optimizer step ``step`` after ``seconds`` of training.

    Linear warm-up, then cosine decay to 2 % of ``learning_rate``
    (``optax.warmup_cosine_decay_schedule``) over ``max_steps``. With ``max_seconds`` the
    schedule runs on whichever is further along, the steps or the clock
    (``seconds / max_seconds`` of ``max_steps``): on a loaded machine it still anneals by the
    time limit, instead of being cut off at a high learning rate.
    """
    import optax

    warm = max(0, min(args.warmup_steps, args.max_steps - 1))
    sched = optax.warmup_cosine_decay_schedule(
        0.0, args.learning_rate, warm, max(args.max_steps, warm + 1), args.learning_rate * 0.02
    )
    pos = float(step)
    if args.max_seconds:
        pos = max(pos, args.max_steps * seconds / args.max_seconds)
    return float(sched(min(pos, args.max_steps)))


def _augment(
    batch: dict[str, np.ndarray],
    rng: np.random.Generator,
    *,
    shift: int = 0,
    scale: float = 0.0,
    flip: bool = False,
) -> None:
    """Mirror, zoom and translate each face at random, and its targets with it (in place).

    Face ``i`` is mirrored (``flip``, with probability 1/2), zoomed by ``s`` in
    ``[1 - scale, 1 + scale]`` about the image centre and moved by up to ``shift`` pixels per
    axis: an output pixel centre ``u`` samples the input at ``c + (u - c - t) / s`` (bilinear,
    edge clamped; as ``batch["warp"]``, one resampling matrix per face and axis, which the
    jitted step applies with :func:`_warp`). Landmarks and boxes (pixel-centre coordinates of the original image,
    normalised by its size) move by the same map; a mirrored face's landmarks are re-indexed
    with ``IBUG68_MIRROR`` (``x -> W - 1 - x``, as the demo's warm-up mirrors).
    """
    imgs = batch["images"]
    n, size = imgs.shape[0], imgs.shape[1]
    if n == 0 or (shift <= 0 and scale <= 0 and not flip):
        return
    s = rng.uniform(1.0 - scale, 1.0 + scale, size=n) if scale > 0 else np.ones(n)
    t = rng.integers(-shift, shift + 1, size=(n, 2)) if shift > 0 else np.zeros((n, 2), int)
    mirror = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    wh = batch["image_size"].astype(np.float64)[:, None, :]  # [n, 1, 2] original (w, h)
    lm = batch["landmarks"].astype(np.float64)
    boxes = batch["boxes"].astype(np.float64)
    if mirror.any():
        from tag_model.synth import IBUG68_MIRROR

        imgs = imgs.copy()
        imgs[mirror] = imgs[mirror][:, :, ::-1]
        edge = (wh[mirror, :, 0] - 1.0) / wh[mirror, :, 0]  # x -> W - 1 - x, normalised
        lm[mirror] = lm[mirror][:, IBUG68_MIRROR]
        lm[mirror, :, 0] = edge - lm[mirror, :, 0]
        bx = boxes[mirror]
        boxes[mirror] = np.stack(
            [edge - bx[..., 2], bx[..., 1], edge - bx[..., 0], bx[..., 3]], axis=-1
        )
    if scale > 0 or shift > 0:
        c = size / 2.0
        u = np.arange(size) + 0.5  # output pixel centres
        src = c + (u[None, None, :] - c - t[:, :, None]) / s[:, None, None] - 0.5  # [n, 2, S]
        src = np.clip(src, 0.0, size - 1.0)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, size - 1)
        w = src - lo
        # bilinear resampling as one [S_out, S_in] matrix per face and axis (x, y), applied
        # inside the jitted step (_warp): two small matmuls instead of host-side gathers
        warp = np.zeros((n, 2, size, size), np.float32)
        idx = np.ix_(np.arange(n), np.arange(2), np.arange(size))
        np.add.at(warp, (*idx, lo), (1.0 - w).astype(np.float32))
        np.add.at(warp, (*idx, hi), w.astype(np.float32))
        batch["warp"] = warp
        # the same map on coordinates: resized continuous q = (p + 0.5) S / W for a
        # pixel-centre coordinate p = x W; q' = c + s (q - c) + t; back to x'
        sn = s[:, None, None]
        q = (lm * wh + 0.5) * size / wh
        lm = ((c + sn * (q - c) + t[:, None, :]) * wh / size - 0.5) / wh
        wh4 = np.concatenate([wh, wh], axis=-1)
        t4 = np.concatenate([t, t], axis=-1)[:, None, :]
        q = (boxes * wh4 + 0.5) * size / wh4
        boxes = ((c + sn * (q - c) + t4) * wh4 / size - 0.5) / wh4
    batch["images"] = imgs
    batch["landmarks"] = lm.astype(np.float32)
    batch["boxes"] = np.clip(boxes, 0.0, 1.0).astype(np.float32)


def _order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_student(
    args: DistillArguments,
    config: Any,
    train: Any,
    *,
    out: Path,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train (or resume) a student; returns ``(model, info)``.

    ``stop_after`` raises :class:`KeyboardInterrupt` after that step (tests: an interrupt).
    """
    import jax
    from flax import nnx

    from tag_train.student._checkpoint import (
        checkpoint_manager,
        restore_training,
        save_training,
    )
    from tag_train.student._model import create_student

    model = create_student(config, args.seed)
    tx = _optimizer(args.weight_decay)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    mngr = checkpoint_manager(out, max_to_keep=args.save_total_limit)
    start, trained_seconds = 0, 0.0
    if args.resume:
        progress = restore_training(mngr, model, optimizer)
        if progress is not None:
            start = int(progress["step"])
            trained_seconds = float(progress.get("seconds", 0.0))
            log(f"resumed from checkpoint step {start}")
    elif mngr.latest_step() is not None:
        raise ValueError(
            f"{out} already holds checkpoints (step {mngr.latest_step()}); pass --resume to "
            "continue, or choose another --output_dir"
        )
    weights = {
        "emotion": args.emotion_weight,
        "au": args.au_weight,
        "landmarks": args.landmark_weight,
        "box": (20.0 if args.target == "boxes" else 0.0)
        if args.box_weight is None
        else args.box_weight,
        "label_smoothing": args.label_smoothing,
    }
    step_fn = train_step_fn(weights)
    n = len(train)
    bs = min(args.batch_size, n)
    per_epoch = n // bs
    metrics_path = out / "metrics.jsonl"
    t0 = time.perf_counter()
    step = start
    last: dict[str, float] = {}
    saved = start
    try:
        while step < args.max_steps:
            epoch, pos = divmod(step, per_epoch)
            idx = _order(n, args.seed, epoch)[pos * bs : (pos + 1) * bs]
            batch = train.take(idx)
            _augment(
                batch,
                np.random.default_rng([args.seed, 1, step]),
                shift=args.shift,
                scale=args.scale,
                flip=args.flip,
            )
            lr = lr_at(args, step, trained_seconds + time.perf_counter() - t0)
            parts = step_fn(model, optimizer, batch, np.float32(lr))
            step += 1
            if step % args.logging_steps == 0 or step == args.max_steps:
                last = {k: float(v) for k, v in jax.device_get(parts).items()}
                last["lr"] = lr
                rec = {"step": step, "seconds": round(time.perf_counter() - t0, 2), **last}
                with open(metrics_path, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                log(
                    f"step {step}/{args.max_steps}  "
                    + "  ".join(f"{k} {v:.4f}" for k, v in last.items())
                )
            elapsed = trained_seconds + time.perf_counter() - t0
            timed_out = args.max_seconds is not None and elapsed >= args.max_seconds
            if step % args.save_steps == 0 or step == args.max_steps or timed_out:
                save_training(mngr, step, model, optimizer, {"step": step, "seconds": elapsed})
                saved = step
            if stop_after is not None and step >= stop_after:
                raise KeyboardInterrupt(f"stopped after step {step}")
            if timed_out:
                log(f"stopping at step {step}: --max_seconds {args.max_seconds:g} reached")
                break
    finally:
        mngr.close()
    return model, {
        "steps": step,
        "resumed_from": start,
        "last_saved": saved,
        "train_seconds": round(trained_seconds + time.perf_counter() - t0, 2),
        "last_losses": last,
    }


# ----------------------------------------------------------------------------- evaluation


def evaluate_student(predictor: Any, data: Any, batch_size: int = 256) -> dict[str, float]:
    """Score a student against a held-out trace split's references.

    Returns ``accuracy``; ``au_precision`` / ``au_recall`` (the student's activated AUs
    against the reference activated list, micro-averaged); ``mean_box_iou`` (for every
    reference AU, the student's box for that AU's region against the reference box, whether
    or not the student activates it); ``grounding_f`` (the class-aware AU-grounding reward of
    the student's activated list against the reference, ``tag_kernels.au_grounding_reward``,
    mean over faces) and ``n``.
    """
    from tag_kernels import elementwise_box_iou
    from tag_kernels.au_reward import au_grounding_reward
    from tag_model.activation import pack_activated

    n = len(data)
    outs = [
        predictor.predict_arrays(
            data.images[s : s + batch_size], data.image_size[s : s + batch_size]
        )
        for s in range(0, n, batch_size)
    ]
    cat = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    correct = cat["emotion_id"] == data.label
    table = predictor.table
    tp = fp = fn = 0
    pairs_pred, pairs_ref = [], []
    for i, ref in enumerate(data.activated or [[] for _ in range(n)]):
        pred = {int(a) for a in cat["act_au"][i] if a >= 0}
        want = {int(a["au"]) for a in ref}
        tp += len(pred & want)
        fp += len(pred - want)
        fn += len(want - pred)
        for a in ref:
            if a["au"] in table.aus:
                pairs_pred.append(cat["region_boxes"][i, table.region_of(a["au"])])
                pairs_ref.append(a["box"])
    ious = (
        np.asarray(
            elementwise_box_iou(
                np.asarray(pairs_pred, np.float32), np.asarray(pairs_ref, np.float32)
            )
        )
        if pairs_pred
        else np.zeros(0)
    )
    ref_boxes, ref_au, ref_prob = pack_activated(data.activated or [[] for _ in range(n)])
    if ref_boxes.shape[1] == 0:  # no reference AU anywhere: one padding slot
        ref_boxes = np.zeros((n, 1, 4), np.float32)
        ref_au = np.full((n, 1), -1, np.int32)
        ref_prob = np.zeros((n, 1), np.float32)
    res = au_grounding_reward(
        cat["act_box"].astype(np.float32),
        cat["act_au"].astype(np.int32),
        ref_boxes.astype(np.float32),
        ref_au.astype(np.int32),
        ref_prob.astype(np.float32),
        backend="torch",  # the reference: no compile, fast enough for an evaluation set
    )
    return {
        "n": int(n),
        "accuracy": float(correct.mean()) if n else float("nan"),
        "au_precision": tp / max(tp + fp, 1),
        "au_recall": tp / max(tp + fn, 1),
        "mean_box_iou": float(np.mean(ious)) if len(ious) else float("nan"),
        "grounding_f": float(np.mean(np.asarray(res.reward))),
    }


# ----------------------------------------------------------------------------- entry point


def run_distill(
    args: DistillArguments,
    *,
    given: set[str] | None = None,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train, save and evaluate a student (``tag-train distill``); returns the summary written
    to ``<output_dir>/eval.json``.

    ``given``: the option names set explicitly (a preset fills only the others).
    """
    from tag_model.backbones import TagSettings, load_tag_settings, save_tag_settings

    from tag_train.student._checkpoint import write_config
    from tag_train.student._data import dataset_labels, load_student_data
    from tag_train.student._infer import StudentPredictor
    from tag_train.student._model import StudentConfig

    t_start = time.perf_counter()
    args, sizes = _apply_preset(args, given if given is not None else set())
    if not args.output_dir:
        raise ValueError("tag-train distill needs --output_dir (the student folder)")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_path, eval_path = args.dataset_path, args.eval_dataset_path
    if not train_path:
        if not args.preset:
            raise ValueError(
                "tag-train distill needs --dataset_path (a trace dataset from `tag-train "
                "traces`), or --preset smoke|demo to build a SynthFACS one"
            )
        labels = _labels_of(args.labels) or ("happiness", "sadness", "surprise", "anger")
        key = f"{args.preset}-{'_'.join(labels)}-{sizes['n_train']}-{sizes['n_eval']}-s{args.seed}"
        root = Path(args.cache_dir or os.environ.get("TAG_CACHE", ".tag-cache")) / "distill" / key
        t = time.perf_counter()
        tr, ev = build_synth_traces(root, labels, sizes["n_train"], sizes["n_eval"], seed=args.seed)
        log(f"SynthFACS trace datasets ready in {time.perf_counter() - t:.0f}s: {tr}, {ev}")
        train_path, eval_path = str(tr), eval_path or str(ev)
    if not Path(train_path).exists():
        raise FileNotFoundError(f"--dataset_path not found: {train_path}")
    from datasets import load_from_disk

    ds = load_from_disk(str(train_path))
    labels = _labels_of(args.labels) or dataset_labels(train_path, ds)
    settings = load_tag_settings(Path(train_path))
    family = args.family or (settings.family if settings else None) or "qwen2_vl"
    top_k = args.top_k or _trace_build_setting(train_path, "top_k") or 6
    config = StudentConfig(
        labels=labels,
        image_size=args.image_size,
        target=args.target,
        widths=tuple(args.widths),
        hidden=args.hidden,
        top_k=int(top_k),
        threshold=args.threshold,
        family=family,
    )
    t = time.perf_counter()
    data = load_student_data(train_path, labels, args.image_size, ds=ds)
    if eval_path:
        if not Path(eval_path).exists():
            raise FileNotFoundError(f"--eval_dataset_path not found: {eval_path}")
        held = load_student_data(eval_path, labels, args.image_size)
        train = data
    else:
        order = np.random.default_rng(args.seed).permutation(len(data))
        n_eval = round(args.eval_fraction * len(data))
        held, train = data.subset(order[:n_eval]), data.subset(order[n_eval:])
    if len(train) == 0:
        raise ValueError(f"{train_path}: no training faces with labels {', '.join(labels)}")
    if config.target == "landmarks" and not train.lm_mask.any():
        raise ValueError(f"{train_path}: no landmarks column (or none filled); use --target boxes")
    log(
        f"student data: {len(train)} train, {len(held)} eval faces, labels {', '.join(labels)} "
        f"({time.perf_counter() - t:.0f}s)"
    )
    write_config(
        out,
        config,
        dataset_path=str(train_path),
        eval_dataset_path=str(eval_path) if eval_path else None,
        args={k: v for k, v in dataclasses.asdict(args).items()},
    )
    space = settings.label_space if settings else None
    save_tag_settings(
        out,
        TagSettings.for_family(
            family,
            labels,
            label_space=space if space and _labels_of(space) == labels else None,
            prompt_style=(settings.prompt_style if settings else None) or "full",
            detector=settings.detector if settings else "geometric",
        ),
    )
    model, info = train_student(args, config, train, out=out, log=log, stop_after=stop_after)
    predictor = StudentPredictor(model)
    summary: dict[str, Any] = {"output_dir": str(out), "train": info}
    if len(held):
        t = time.perf_counter()
        summary["eval"] = evaluate_student(predictor, held)
        summary["eval_seconds"] = round(time.perf_counter() - t, 2)
        ev = summary["eval"]
        log(
            f"held-out ({ev['n']} faces): accuracy {ev['accuracy']:.3f}  grounding F "
            f"{ev['grounding_f']:.3f}  mean box IoU {ev['mean_box_iou']:.3f}  AU precision "
            f"{ev['au_precision']:.3f}  recall {ev['au_recall']:.3f}"
        )
    summary["seconds"] = round(time.perf_counter() - t_start, 2)
    (out / "eval.json").write_text(json.dumps(summary, indent=2))
    log(f"student saved in {out} ({summary['seconds']:.0f}s)")
    return summary
