"""The student network: a small Flax NNX conv net with three heads.

Input: ``uint8[B, S, S, 3]`` faces (``S`` = :attr:`StudentConfig.image_size`). A patch stem
(einops: ``S/28``-pixel patches -> a 28 x 28 grid, whatever ``S``) feeds strided 3x3 convs down
to 7 x 7; the flattened map goes through one dense layer, then three heads:

* ``emotion``: logits over the label set;
* ``au``: one logit per AU of the region table (``table.aus`` order, the activated list's
  columns);
* ``geometry``: 68 landmarks (``target="landmarks"``, normalised to ``[0, 1]`` of the image;
  boxes come from :func:`tag_kernels.landmarks_to_regions`, run inside the jitted model by
  its JAX backend) or one box per region (``target="boxes"``, normalised ``xyxy``).

:func:`student_forward` turns the raw heads into pixels and the activated list (also with the
kernels' JAX backends), all in one jittable function.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

__all__ = ["GRID", "StudentConfig", "StudentNet", "create_student", "student_forward"]

#: Side of the patch grid the stem produces, whatever the input size (a multiple of it).
GRID = 28


@dataclass(frozen=True)
class StudentConfig:
    """Architecture and output settings of a student (saved as ``student.json``).

    Attributes:
        labels: emotion labels (index = logit column).
        image_size: input side in pixels; a multiple of 28 (112, 224, ...).
        target: ``"landmarks"`` (68 points -> region boxes) or ``"boxes"`` (one box per region).
        widths: channels after the stem and after each of the two stride-2 stages.
        hidden: width of the dense layer feeding the heads.
        top_k, threshold: the activated list the student reports.
        family: the backbone family whose box convention rendered traces use.
        table: name of the region table (only ``"ibug68"`` is built in).
    """

    labels: tuple[str, ...]
    image_size: int = 112
    target: str = "landmarks"
    widths: tuple[int, int, int] = (32, 64, 96)
    hidden: int = 256
    top_k: int = 6
    threshold: float = 0.5
    family: str = "qwen2_vl"
    table: str = "ibug68"

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.image_size % GRID or self.image_size < GRID:
            raise ValueError(f"image_size must be a multiple of {GRID}, got {self.image_size}")
        if self.target not in ("landmarks", "boxes"):
            raise ValueError(f"target must be 'landmarks' or 'boxes', got {self.target!r}")
        if len(self.widths) != 3:
            raise ValueError(f"widths needs 3 values, got {self.widths}")
        if not self.labels:
            raise ValueError("labels must not be empty")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["labels"] = list(self.labels)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudentConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def patch(self) -> int:
        return self.image_size // GRID


def region_table(name: str) -> Any:
    """The region table called ``name``."""
    from tag_kernels import IBUG68_REGIONS

    if name != "ibug68":
        raise ValueError(f"unknown region table {name!r}; only 'ibug68' is built in")
    IBUG68_REGIONS.on_device("jax")  # packed once, eagerly, even when first asked in a trace
    return IBUG68_REGIONS


class StudentNet(nnx.Module):
    """Patch stem, two stride-2 conv stages, a dense trunk and three heads."""

    def __init__(self, config: StudentConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        table = region_table(config.table)
        w0, w1, w2 = config.widths
        p = config.patch
        self.stem = nnx.Linear(p * p * 3, w0, rngs=rngs)
        self.merge1 = nnx.Linear(4 * w0, w1, rngs=rngs)
        self.merge2 = nnx.Linear(4 * w1, w2, rngs=rngs)
        self.mix = nnx.Conv(w2, w2, (3, 3), rngs=rngs)
        self.norm = nnx.LayerNorm(7 * 7 * w2, rngs=rngs)
        self.trunk = nnx.Linear(7 * 7 * w2, config.hidden, rngs=rngs)
        self.emotion = nnx.Linear(config.hidden, len(config.labels), rngs=rngs)
        self.au = nnx.Linear(config.hidden, len(table.aus), rngs=rngs)
        n_geo = 68 * 2 if config.target == "landmarks" else len(table) * 4
        self.geometry = nnx.Linear(config.hidden, n_geo, rngs=rngs)

    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        """``uint8|float[B, S, S, 3]`` (0-255) -> raw heads: ``emotion_logits[B, C]``,
        ``au_logits[B, A]`` and ``landmarks[B, 68, 2]`` or ``boxes[B, R, 4]`` (normalised)."""
        p = self.config.patch
        x = images.astype(jnp.float32) * (1.0 / 127.5) - 1.0
        x = rearrange(x, "b (h p1) (w p2) c -> b h w (p1 p2 c)", p1=p, p2=p)
        x = nnx.gelu(self.stem(x))  # [B, 28, 28, w0]
        x = rearrange(x, "b (h i) (w j) c -> b h w (i j c)", i=2, j=2)
        x = nnx.gelu(self.merge1(x))  # [B, 14, 14, w1]
        x = rearrange(x, "b (h i) (w j) c -> b h w (i j c)", i=2, j=2)
        x = nnx.gelu(self.merge2(x))  # [B, 7, 7, w2]
        x = x + nnx.gelu(self.mix(x))
        x = rearrange(x, "b h w c -> b (h w c)")
        h = nnx.gelu(self.trunk(self.norm(x)))
        out = {"emotion_logits": self.emotion(h), "au_logits": self.au(h)}
        g = nnx.sigmoid(self.geometry(h))
        if self.config.target == "landmarks":
            out["landmarks"] = rearrange(g, "b (l two) -> b l two", two=2)
        else:
            g = rearrange(g, "b (r four) -> b r four", four=4)
            lo = jnp.minimum(g[..., :2], g[..., 2:])
            hi = jnp.maximum(g[..., :2], g[..., 2:])
            out["boxes"] = jnp.concatenate([lo, hi], axis=-1)
        return out


def create_student(config: StudentConfig, seed: int = 0) -> StudentNet:
    """A freshly initialised :class:`StudentNet`.

    The weights are made in one jitted call, compiled once per config and process (eagerly,
    every initializer would compile on its own).
    """
    graphdef, _ = nnx.split(abstract_student(config))
    return nnx.merge(graphdef, _init_fn(config)(jax.random.key(seed)))


@functools.cache
def _init_fn(config: StudentConfig) -> Any:
    def init(key: jax.Array) -> Any:
        return nnx.state(StudentNet(config, rngs=nnx.Rngs(key)))

    return jax.jit(init)


def abstract_student(config: StudentConfig) -> StudentNet:
    """A :class:`StudentNet` of shapes only (nothing computed), to restore weights into."""
    return nnx.eval_shape(lambda: StudentNet(config, rngs=nnx.Rngs(0)))


def region_boxes(
    raw: dict[str, jax.Array], image_size: jax.Array, config: StudentConfig
) -> tuple[jax.Array, jax.Array | None]:
    """``(boxes[B, R, 4], landmarks[B, 68, 2] | None)`` in image pixels from the raw heads.

    ``image_size[B, 2]`` is each face's original ``(w, h)``; normalised outputs scale to it.
    """
    from tag_kernels import landmarks_to_regions

    wh = image_size.astype(jnp.float32)
    if config.target == "landmarks":
        lm = raw["landmarks"] * wh[:, None, :]
        boxes = landmarks_to_regions(lm, wh, region_table(config.table))
        return boxes, lm
    scale = jnp.concatenate([wh, wh], axis=-1)[:, None, :]
    return raw["boxes"] * scale, None


def student_forward(
    model: StudentNet, images: jax.Array, image_size: jax.Array
) -> dict[str, jax.Array]:
    """Images -> every output array of a :class:`~tag_train.student.StudentOutput`.

    Returns ``emotion_probs[B, C]``, ``emotion_id[B]``, ``au_probs[B, A]``,
    ``region_boxes[B, R, 4]`` (pixels), ``landmarks[B, 68, 2]`` (pixels; NaN for a box
    student), and the activated list ``act_au[B, K]`` (-1 pad), ``act_prob[B, K]``,
    ``act_box[B, K, 4]`` (pixels), from :func:`tag_kernels.activated_list`'s JAX backend.
    """
    from tag_kernels import activated_list

    config = model.config
    raw = model(images)
    boxes, lm = region_boxes(raw, image_size, config)
    au_probs = jax.nn.sigmoid(raw["au_logits"])
    act_au, act_prob, act_box = activated_list(
        au_probs,
        boxes,
        region_table(config.table),
        top_k=config.top_k,
        threshold=config.threshold,
    )
    probs = jax.nn.softmax(raw["emotion_logits"], axis=-1)
    if lm is None:
        lm = jnp.full((images.shape[0], 68, 2), jnp.nan, jnp.float32)
    return {
        "emotion_probs": probs,
        "emotion_id": jnp.argmax(probs, axis=-1).astype(jnp.int32),
        "au_probs": au_probs,
        "region_boxes": boxes,
        "landmarks": lm,
        "act_au": act_au,
        "act_prob": act_prob,
        "act_box": act_box,
    }
