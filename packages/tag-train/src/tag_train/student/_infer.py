"""Student inference: images -> :class:`StudentOutput` (emotion, AU probabilities, the activated
list with boxes in image pixels, and a TAG trace written from that evidence)."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tag_train.student._model import StudentConfig, StudentNet, region_table, student_forward

__all__ = ["StudentOutput", "StudentPredictor", "load", "render_student_trace"]


@dataclass
class StudentOutput:
    """A batch of student predictions (faces on axis 0; boxes in each image's pixels).

    Attributes:
        labels: the label set (columns of ``emotion_probs``).
        emotion: the predicted label of each face.
        emotion_probs: ``float32[B, C]``.
        aus: AU numbers of the columns of ``au_probs`` (the region table's AUs).
        au_probs: ``float32[B, A]``.
        activated: per face, the activated list ``[ActivatedAU(au, prob, box)]`` (top-k over
            the threshold, by descending probability).
        region_boxes: ``float32[B, R, 4]``, one box per region of the table.
        landmarks: ``float32[B, 68, 2]`` (NaN for a box student).
        image_size: ``float32[B, 2]`` (w, h) of each input image.
        traces: per face, a TAG trace of that evidence (``None`` when not rendered).
    """

    labels: tuple[str, ...]
    emotion: list[str]
    emotion_probs: np.ndarray
    aus: tuple[int, ...]
    au_probs: np.ndarray
    activated: list[list[Any]]
    region_boxes: np.ndarray
    landmarks: np.ndarray
    image_size: np.ndarray
    traces: list[str] | None = field(default=None)

    def __len__(self) -> int:
        return len(self.emotion)


_STRENGTH = (
    (0.85, "strong", "clearly visible"),
    (0.65, "visible", "visible"),
    (0.0, "slight", "slight but present"),
)


def _strength(p: float) -> tuple[str, str]:
    for lo, adjective, phrase in _STRENGTH:
        if p >= lo:
            return adjective, phrase
    return _STRENGTH[-1][1], _STRENGTH[-1][2]


def _short(description: str) -> str:
    return description.split(";")[0].split(",")[0].split("(")[0].strip()


def render_student_trace(
    label: str,
    activated: Sequence[Any],
    image_size: tuple[float, float],
    *,
    family: str = "qwen2_vl",
    face_box: Sequence[float] | None = None,
) -> str:
    """A TAG trace (``tag_model.grounding.render_trace``) of a student's evidence.

    One verification step per region of the activated list (AUs sharing a region share its
    box, as in "AU4 AU9"), worded with the AU catalogue's region and description; boxes in
    ``family``'s coordinate space (what ``parse_trace`` and the backbone adapter read back);
    the conclusion combines the activated AUs into ``label``. With nothing activated, one step
    inspects ``face_box`` with no AU named.
    """
    from tag_model.au import AU_CATALOGUE
    from tag_model.backbones import get_adapter
    from tag_model.grounding import TraceStep, render_trace

    adapter = get_adapter(family)
    groups: dict[tuple[float, ...], list[Any]] = {}
    for a in activated:
        groups.setdefault(tuple(float(v) for v in a.box), []).append(a)
    steps = []
    for box, g in groups.items():
        first = AU_CATALOGUE.get(int(g[0].au))
        region = first.region if first else "face"
        parts = []
        for a in g:
            au = AU_CATALOGUE.get(int(a.au))
            desc = _short(au.description) if au else f"action of AU{a.au}"
            parts.append(f"{desc}, {_strength(float(a.prob))[1]}")
        model_box = np.asarray(adapter.from_pixels(np.asarray(box, np.float64), image_size))
        steps.append(
            TraceStep(
                f"the {region}",
                "; ".join(parts),
                tuple(dict.fromkeys(int(a.au) for a in g)),
                tuple(float(v) for v in model_box),
            )
        )
    if activated:
        top = max(activated, key=lambda a: float(a.prob))
        au = AU_CATALOGUE.get(int(top.au))
        what = au.name.lower() if au else f"action of AU{top.au}"
        ga = f"The face shows a {_strength(float(top.prob))[0]} {what}."
    else:
        ga = "The face is relaxed and no strong muscle action stands out."
        if face_box is not None:
            fb = np.asarray(adapter.from_pixels(np.asarray(face_box, np.float64), image_size))
            steps.append(
                TraceStep(
                    "the whole face",
                    "the muscles are at rest, with no action above threshold",
                    (),
                    tuple(float(v) for v in fb),
                )
            )
    aus = sorted({int(a.au) for a in activated})
    if label == "neutral" or not aus:
        text = (
            "No emotional action unit is active, which indicates a neutral expression."
            if label == "neutral"
            else f"The overall configuration indicates {label}."
        )
        return render_trace(ga, steps, [], label, conclusion_text=text)
    return render_trace(ga, steps, aus, label)


class StudentPredictor:
    """A trained student, jitted: ``predict(images) -> StudentOutput``.

    Build it with :func:`load` (a student folder) or from a :class:`StudentNet`.
    """

    def __init__(self, model: StudentNet) -> None:
        from flax import nnx

        self.model = model
        self.config: StudentConfig = model.config
        self.table = region_table(self.config.table)
        graphdef, state = nnx.split(model)
        self._state = state
        self._fwd = _forward_fn(graphdef, self.config.image_size)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.labels

    def predict_arrays(self, images: Any, image_size: Any = None) -> dict[str, np.ndarray]:
        """``uint8[B, H, W, 3]`` (resized to the student's input inside the jitted function)
        and ``image_size[B, 2]`` (default: ``(W, H)``) -> the output arrays of
        :func:`~tag_train.student._model.student_forward` as NumPy."""
        import jax

        images = np.asarray(images)
        n = len(images)
        if image_size is None:
            image_size = np.tile(np.asarray([images.shape[2], images.shape[1]], np.float32), (n, 1))
        image_size = np.asarray(image_size, np.float32)
        padded = _bucket(n)
        if padded != n:  # a few batch shapes, compiled once each
            images = np.concatenate(
                [images, np.zeros((padded - n, *images.shape[1:]), images.dtype)]
            )
            image_size = np.concatenate([image_size, np.ones((padded - n, 2), np.float32)])
        out = jax.device_get(self._fwd(self._state, images, image_size))
        return {k: np.asarray(v)[:n] for k, v in out.items()}

    def predict_device(self, images: Any, image_size: Any) -> dict[str, Any]:
        """Like :meth:`predict_arrays` but leaves the outputs as (asynchronous) JAX arrays."""
        return self._fwd(self._state, images, image_size)

    def predict(self, images: Any, *, traces: bool = True) -> StudentOutput:
        """Predict a batch: PIL images or arrays ``[H, W, 3]`` (any sizes; each is resized to
        the student's input and its boxes mapped back to its own pixels), or one
        ``uint8[B, H, W, 3]`` array. ``traces=False`` skips rendering."""
        from tag_model.activation import ActivatedAU

        from tag_train.student._data import images_to_array

        arr, wh = images_to_array(list(images), self.config.image_size)
        o = self.predict_arrays(arr, wh)
        activated = [
            [
                ActivatedAU(int(a), float(p), tuple(float(v) for v in b))
                for a, p, b in zip(o["act_au"][i], o["act_prob"][i], o["act_box"][i])
                if a >= 0
            ]
            for i in range(len(arr))
        ]
        emotion = [self.labels[int(i)] for i in o["emotion_id"]]
        out = StudentOutput(
            labels=self.labels,
            emotion=emotion,
            emotion_probs=o["emotion_probs"],
            aus=tuple(self.table.aus),
            au_probs=o["au_probs"],
            activated=activated,
            region_boxes=o["region_boxes"],
            landmarks=o["landmarks"],
            image_size=wh,
        )
        if traces:
            out.traces = [
                render_student_trace(
                    emotion[i],
                    activated[i],
                    (float(wh[i, 0]), float(wh[i, 1])),
                    family=self.config.family,
                    face_box=_face_box(o["region_boxes"][i]),
                )
                for i in range(len(arr))
            ]
        return out


#: how the student's training faces are framed (SynthFACS at 112 px, 300 faces): the landmark
#: box spans 0.548 of the width and 0.536 of the height on average (0.48 to 0.59 for 80 % of
#: faces), and its centre sits at (0.494, 0.601) of the image (sd 0.02): the forehead has room
FACE_FRACTION = 0.54
FACE_CENTRE = (0.494, 0.601)


def frame_face(
    landmarks: Any,
    *,
    fraction: float = FACE_FRACTION,
    centre: tuple[float, float] = FACE_CENTRE,
) -> tuple[int, int, int, int]:
    """The square crop ``(x1, y1, x2, y2)`` that frames a face as the student's training faces
    are framed: the longer side of its 68 landmarks' box (``[68, 2]``, image pixels) is
    ``fraction`` of the crop's side, and the box's centre lies at ``centre`` (fractions of the
    crop). Crop a photograph with it before :meth:`StudentPredictor.predict` and add
    ``(x1, y1)`` to the boxes it returns; the crop may reach past the image's edge (PIL pads
    it with black).

    >>> import numpy as np
    >>> frame_face(np.array([[100.0, 120.0], [154.0, 174.0]]), centre=(0.5, 0.5))
    (77, 97, 177, 197)
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(lm).all() or not 0 < fraction <= 1:
        raise ValueError(
            f"frame_face: landmarks must be finite and fraction in (0, 1], got fraction "
            f"{fraction} and {int((~np.isfinite(lm)).sum())} non-finite coordinates"
        )
    lo, hi = lm.min(0), lm.max(0)
    side = float((hi - lo).max()) / fraction
    cx, cy = (lo + hi) / 2
    x1, y1 = round(cx - centre[0] * side), round(cy - centre[1] * side)
    n = round(side)
    return (x1, y1, x1 + n, y1 + n)


def _bucket(n: int) -> int:
    """Batch size to run ``n`` faces at: a power of two from 8 to 256, then multiples of 256."""
    if n <= 256:
        return max(8, 1 << max(n - 1, 0).bit_length())
    return -(-n // 256) * 256


@functools.cache
def _forward_fn(graphdef: Any, size: int) -> Any:
    """The jitted forward of one architecture (shared by every predictor of it)."""
    import jax
    from flax import nnx

    def fwd(state: Any, images: Any, image_size: Any) -> dict[str, Any]:
        if images.shape[1:3] != (size, size):
            images = jax.image.resize(
                images.astype("float32"), (images.shape[0], size, size, 3), "bilinear"
            )
        return student_forward(nnx.merge(graphdef, state), images, image_size)

    return jax.jit(fwd)


def _face_box(boxes: np.ndarray) -> tuple[float, float, float, float] | None:
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if not ok.any():
        return None
    b = boxes[ok]
    return (float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max()))


def load(folder: str | os.PathLike[str], *, step: int | None = None) -> StudentPredictor:
    """The student saved in ``folder`` (by ``tag-train distill``), latest checkpoint by default.

    Raises:
        FileNotFoundError: ``folder`` has no ``student.json`` or no checkpoint.
    """
    from tag_train.student._checkpoint import restore_model

    return StudentPredictor(restore_model(folder, step))
