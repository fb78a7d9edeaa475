"""Teacher protocol: the request a teacher answers and the reply it gives back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from PIL import Image

__all__ = ["ActivatedEntry", "Teacher", "TeacherReply", "TeacherRequest"]


@dataclass(frozen=True)
class ActivatedEntry:
    """One activated AU as a teacher sees it.

    ``box`` is xyxy in **image pixels**; ``model_box`` is the same box in the target
    backbone's coordinate space (the space the trace must be written in).
    """

    au: int
    prob: float
    box: tuple[float, float, float, float]
    model_box: tuple[float, float, float, float]


@dataclass
class TeacherRequest:
    """Everything a teacher needs to write one trace.

    Attributes:
        sample_id: stable id of the sample (used for seeding and logs).
        image: the face image.
        labels: the allowed answers (canonical label names, index = label id).
        activated: the activated list, highest probability first.
        system: the system message (trace format instructions).
        user: the user text (activated list, label set, label elimination).
        eliminated: labels already rejected for this sample (label elimination).
        attempt: 0 for the first try, then 1, 2, ...
        face_box: the face's landmark bounding box in the model's coordinate space
            (lets a teacher ground a step when no AU is active).
        label: the gold label. Only teachers that declare ``uses_gold_label`` read it;
            the OpenAI and HF teachers never see it.
        encoded_image: the image's own file bytes (PNG, JPEG or WEBP) when they decode to
            exactly ``image`` (no EXIF rotation, RGB or grayscale). A teacher that sends
            images over HTTP sends these as they are instead of re-encoding ``image``.
    """

    sample_id: str
    image: Image.Image
    labels: tuple[str, ...]
    activated: tuple[ActivatedEntry, ...]
    system: str
    user: str
    eliminated: tuple[str, ...] = ()
    attempt: int = 0
    label: str | None = None
    face_box: tuple[float, float, float, float] | None = None
    encoded_image: bytes | None = field(default=None, repr=False)


@dataclass
class TeacherReply:
    """A teacher's answer: the trace text and metadata (model, latency, usage, error).

    ``text`` is ``""`` when the teacher failed (``meta["error"]`` says why). The builder
    records such a reply as a ``teacher_error``, which the next run asks again; it is never
    raised and never counted as a format failure.
    """

    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Teacher(Protocol):
    """A trace writer. ``generate`` answers a batch of requests, in order."""

    name: str
    uses_gold_label: bool

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherReply]: ...
