"""The one ``ground_truth`` object every framework adapter reads: :class:`GroundTruth`.

An exported dataset stores it as a JSON string (verl's ``reward_model.ground_truth``, EasyR1's
answer column, OpenRLHF's label column); the adapters accept that string or the parsed dict.
Schema (version 1)::

    {
      "version": 1,
      "label": "happiness",                 # the sample's emotion (a canonical name or synonym)
      "activated": [                        # the AU detector's activated list, image pixels
        {"au": 12, "prob": 0.93, "box": [31.0, 70.5, 82.0, 96.0]}, ...
      ],
      "image_size": [112, 112],             # (w, h) of the image the boxes refer to
      "family": "qwen2_5_vl",               # backbone family: how model boxes map to pixels
      "min_pixels": null, "max_pixels": null,  # Qwen2.5-VL's processor pixel budget (null: default)
      "labels": ["anger", ...] | null       # the answers the parser accepts (null: all canonical)
    }

Validation is strict: a malformed object raises :class:`ValueError` naming the field
(``ground_truth.activated[2].box: ...``); a reward never silently becomes 0 because of a bad row.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import Any

__all__ = ["SCHEMA_VERSION", "GroundTruth"]

SCHEMA_VERSION = 1

_KEYS = (
    "version",
    "label",
    "activated",
    "image_size",
    "family",
    "min_pixels",
    "max_pixels",
    "labels",
)
_REQUIRED = ("label", "activated", "image_size", "family")


def _fail(field: str, msg: str) -> ValueError:
    return ValueError(f"ground_truth.{field}: {msg}")


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _check_label(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(field, f"expected an emotion name (a non-empty string), got {value!r}")
    name = _canonical(value)
    if name is None:
        raise _fail(field, f"{value!r} is not an emotion TAG knows")
    return name


@lru_cache(maxsize=4096)
def _canonical(value: str) -> str | None:
    from tag_model.au import canonical_label

    return canonical_label(value)


_NUMBER = frozenset((int, float))


def _fast_activated(value: list[Any] | tuple[Any, ...]) -> tuple[dict[str, Any], ...] | None:
    """The common case, a well-formed list, checked with C-level passes (``map``, ``set``,
    ``min``); ``None`` sends the list to the entry-by-entry check, which names the bad field."""
    if not all(type(e) is dict and len(e) == 3 for e in value):
        return None
    try:
        aus = [e["au"] for e in value]
        probs = [e["prob"] for e in value]
        boxes = [e["box"] for e in value]
    except KeyError:
        return None
    if not set(map(type, aus)) <= {int} or not set(map(type, probs)) <= _NUMBER:
        return None
    if not all(type(b) is list and len(b) == 4 for b in boxes):
        return None
    flat = list(chain.from_iterable(boxes))
    if not set(map(type, flat)) <= _NUMBER or not all(map(math.isfinite, flat)):
        return None
    if aus and (min(aus) < 0 or not all(map(math.isfinite, probs))):
        return None
    if aus and (min(probs) < 0 or max(probs) > 1):
        return None
    return tuple(
        {"au": au, "prob": float(p), "box": list(map(float, b))}
        for au, p, b in zip(aus, probs, boxes, strict=True)
    )


def _check_activated(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list | tuple):
        raise _fail(
            "activated", f"expected a list of {{au, prob, box}}, got {type(value).__name__}"
        )
    fast = _fast_activated(value)
    if fast is not None:
        return fast
    out = []
    for i, entry in enumerate(value):
        where = f"activated[{i}]"
        if not isinstance(entry, dict):
            raise _fail(where, f"expected an object {{au, prob, box}}, got {entry!r}")
        missing = [k for k in ("au", "prob", "box") if k not in entry]
        if missing:
            raise _fail(where, f"missing {', '.join(missing)} (has {sorted(entry)})")
        extra = sorted(set(entry) - {"au", "prob", "box"})
        if extra:
            raise _fail(where, f"unknown keys {extra} (expected au, prob, box)")
        au, prob, box = entry["au"], entry["prob"], entry["box"]
        if isinstance(au, float) and au.is_integer():
            au = int(au)
        if not isinstance(au, int) or isinstance(au, bool) or au < 0:
            raise _fail(f"{where}.au", f"expected an AU number (int >= 0), got {au!r}")
        if not _finite(prob) or not 0.0 <= prob <= 1.0:
            raise _fail(f"{where}.prob", f"expected a probability in [0, 1], got {prob!r}")
        if not isinstance(box, list | tuple) or len(box) != 4 or not all(_finite(v) for v in box):
            raise _fail(f"{where}.box", f"expected 4 finite numbers [x1, y1, x2, y2], got {box!r}")
        out.append({"au": int(au), "prob": float(prob), "box": [float(v) for v in box]})
    return tuple(out)


def _check_size(value: Any) -> tuple[float, float]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(_finite(v) and v > 0 for v in value)
    ):
        raise _fail("image_size", f"expected [w, h], two positive finite numbers, got {value!r}")
    w, h = value
    return (
        int(w) if float(w).is_integer() else float(w),
        int(h) if float(h).is_integer() else float(h),
    )


def _check_family(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail("family", f"expected a backbone family name, got {value!r}")
    return _family(value)


@lru_cache(maxsize=256)
def _family(value: str) -> str:
    from tag_model.backbones import UnknownFamilyError, resolve_family

    try:
        return resolve_family(value)
    except UnknownFamilyError as exc:
        raise _fail("family", str(exc)) from None


def _check_pixels(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _fail(field, f"expected a positive integer or null, got {value!r}")
    return value


def _check_labels(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise _fail("labels", f"expected a non-empty list of emotion names or null, got {value!r}")
    if all(type(v) is str for v in value):
        return _labels(tuple(value))
    return tuple(_check_label(v, f"labels[{i}]") for i, v in enumerate(value))


@lru_cache(maxsize=256)
def _labels(value: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_check_label(v, f"labels[{i}]") for i, v in enumerate(value))


@dataclass(frozen=True)
class GroundTruth:
    """What TAG's rewards need to score one completion, as one JSON-serialisable object.

    Attributes:
        label: canonical emotion name of the sample.
        activated: the detector's activated list, ``({"au", "prob", "box"}, ...)``, boxes
            ``xyxy`` in image pixels.
        image_size: ``(w, h)`` of the image the boxes refer to.
        family: canonical backbone family (``"qwen2_5_vl"``); its adapter converts the
            model's boxes to image pixels.
        min_pixels, max_pixels: Qwen2.5-VL's processor pixel budget (``None``: the family's
            released default). The model's boxes live in the resized image.
        labels: the answers the parser accepts (``None``: every canonical label).

    >>> gt = GroundTruth.from_any('{"label": "happy", "activated": [], "image_size": [64, 48],'
    ...                           ' "family": "Qwen2.5-VL"}')
    >>> gt.label, gt.family, gt.image_size
    ('happiness', 'qwen2_5_vl', (64, 48))
    >>> GroundTruth.from_any(gt.to_json()) == gt
    True
    """

    label: str
    activated: tuple[dict[str, Any], ...]
    image_size: tuple[float, float]
    family: str
    min_pixels: int | None = None
    max_pixels: int | None = None
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # validate and normalise whatever the constructor got (from_dict goes through here too)
        set_ = object.__setattr__
        set_(self, "label", _check_label(self.label, "label"))
        set_(self, "activated", _check_activated(self.activated))
        set_(self, "image_size", _check_size(self.image_size))
        set_(self, "family", _check_family(self.family))
        set_(self, "min_pixels", _check_pixels(self.min_pixels, "min_pixels"))
        set_(self, "max_pixels", _check_pixels(self.max_pixels, "max_pixels"))
        if (
            self.min_pixels is not None
            and self.max_pixels is not None
            and self.min_pixels > self.max_pixels
        ):
            raise _fail("min_pixels", f"{self.min_pixels} > max_pixels {self.max_pixels}")
        set_(self, "labels", _check_labels(self.labels))

    def __hash__(self) -> int:  # activated holds dicts: hash the JSON form
        return hash(self.to_json())

    @property
    def group_key(self) -> tuple[Any, ...]:
        """Rows with equal keys are scored by one reward call (same adapter, same label set)."""
        return (self.family, self.min_pixels, self.max_pixels, self.labels)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (plain lists and numbers)."""
        return {
            "version": SCHEMA_VERSION,
            "label": self.label,
            "activated": [
                {"au": e["au"], "prob": e["prob"], "box": list(e["box"])} for e in self.activated
            ],
            "image_size": list(self.image_size),
            "family": self.family,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "labels": None if self.labels is None else list(self.labels),
        }

    def to_json(self) -> str:
        """The compact JSON string stored in exported datasets."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Any) -> GroundTruth:
        """Validate a parsed object; raises ``ValueError`` naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError(
                f"ground_truth: expected a JSON object or its string, got {type(data).__name__}"
            )
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise ValueError(f"ground_truth: unknown fields {unknown} (known: {', '.join(_KEYS)})")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise _fail(missing[0], "missing (required: " + ", ".join(_REQUIRED) + ")")
        version = data.get("version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise _fail("version", f"this TAG reads version {SCHEMA_VERSION}, got {version!r}")
        return cls(
            label=data["label"],
            activated=data["activated"],
            image_size=data["image_size"],
            family=data["family"],
            min_pixels=data.get("min_pixels"),
            max_pixels=data.get("max_pixels"),
            labels=data.get("labels"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> GroundTruth:
        """Parse the stored JSON string (cached: a prompt's string repeats over its rollouts)."""
        if isinstance(text, bytes | bytearray):
            text = bytes(text).decode("utf-8", errors="replace")
        if not isinstance(text, str):
            raise ValueError(f"ground_truth: expected a JSON string, got {type(text).__name__}")
        return _from_json_cached(text)

    @classmethod
    def from_any(cls, value: Any) -> GroundTruth:
        """A :class:`GroundTruth`, its dict, or its JSON string (``str``/``bytes``)."""
        if isinstance(value, GroundTruth):
            return value
        if isinstance(value, str | bytes | bytearray):
            return cls.from_json(value)
        if isinstance(value, dict):
            return cls.from_dict(value)
        raise ValueError(
            "ground_truth: expected a JSON string or an object "
            f"{{label, activated, image_size, family, ...}}, got {type(value).__name__}"
        )


@lru_cache(maxsize=65536)
def _from_json_cached(text: str) -> GroundTruth:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"ground_truth: not valid JSON ({exc.msg} at char {exc.pos})") from None
    return GroundTruth.from_dict(data)
