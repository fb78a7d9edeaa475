"""The TAG settings a checkpoint was trained with (``tag_settings.json``) and checkpoint kinds.

A student checkpoint is only usable with the prompt it was trained on: the backbone family
(which fixes the box coordinate space), the label set and its order, the prompt style and the
AU detector behind the reference boxes. ``tag-train sft|rl|merge`` write these next to the
weights as ``tag_settings.json``; evaluation and further training read them back with
:func:`load_tag_settings`. Nothing here imports transformers or torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._families import UnknownFamilyError, family_spec

__all__ = [
    "SETTINGS_FILE",
    "TagSettings",
    "checkpoint_kind",
    "load_tag_settings",
    "save_tag_settings",
]

#: File name of the settings inside a checkpoint folder.
SETTINGS_FILE = "tag_settings.json"

_VERSION = 1
_COORD_SPACES = ("relative_1000", "absolute_resized")
# The styles of ``_prompts.PROMPT_STYLES``; repeated so this module stays import-light.
_STYLES = ("full", "compact")
_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass(frozen=True)
class TagSettings:
    """How a TAG checkpoint was trained: what its prompt and its boxes mean.

    Attributes:
        family: the backbone family (``"qwen2_5_vl"``, ...; any alias is normalised).
        coord_space: the family's box coordinate space (``"relative_1000"`` or
            ``"absolute_resized"``); must agree with ``family``.
        label_space: the named label space (``"rafdb"``, ``"ferplus"``, ...) or None when the
            labels were taken from the data or given as an explicit list.
        labels: the label set in prompt order (index = label id), canonical names.
        prompt_style: the student prompt's style, ``"full"`` or ``"compact"``.
        detector: the AU detector behind the reference boxes (``"geometric"``,
            ``"openface"``, ``"pyfeat"``), or None when unknown.

    >>> s = TagSettings.for_family("Qwen2.5-VL", ["happiness", "sadness"], label_space=None)
    >>> s.coord_space, s.labels
    ('absolute_resized', ('happiness', 'sadness'))
    >>> TagSettings.from_dict(s.to_dict()) == s
    True
    """

    family: str
    coord_space: str
    label_space: str | None
    labels: tuple[str, ...]
    prompt_style: str
    detector: str | None

    def __post_init__(self) -> None:
        # normalise and validate through the same path as files, so a bad value is a clear error
        checked = _validate({k: getattr(self, k) for k in _FIELDS}, source="TagSettings")
        object.__setattr__(self, "family", checked["family"])
        object.__setattr__(self, "labels", checked["labels"])

    @classmethod
    def for_family(
        cls,
        family: str,
        labels: Any,
        *,
        label_space: str | None = None,
        prompt_style: str = "full",
        detector: str | None = "geometric",
    ) -> TagSettings:
        """Settings for ``family`` with its coordinate space filled in."""
        spec = family_spec(family)
        return cls(
            family=spec.name,
            coord_space=spec.coord_space,
            label_space=label_space,
            labels=tuple(labels),
            prompt_style=prompt_style,
            detector=detector,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``labels`` as a list, plus a ``version`` key)."""
        return {
            "version": _VERSION,
            "family": self.family,
            "coord_space": self.coord_space,
            "label_space": self.label_space,
            "labels": list(self.labels),
            "prompt_style": self.prompt_style,
            "detector": self.detector,
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "tag settings") -> TagSettings:
        """Build from :meth:`to_dict`'s output; keys this version does not know are ignored.

        Raises:
            ValueError: naming ``source`` and the field that is missing or wrong.
        """
        checked = _validate(data, source=source)
        return cls(**{k: checked[k] for k in _FIELDS})

    def replace(self, **changes: Any) -> TagSettings:
        """A copy with ``changes`` applied (``coord_space`` follows a new ``family``)."""
        data = {k: getattr(self, k) for k in _FIELDS}
        data.update(changes)
        if "family" in changes and "coord_space" not in changes:
            data["coord_space"] = family_spec(data["family"]).coord_space
        return TagSettings(**data)


_FIELDS = ("family", "coord_space", "label_space", "labels", "prompt_style", "detector")


def _validate(data: Any, *, source: str) -> dict[str, Any]:
    def bad(name: str, why: str) -> ValueError:
        return ValueError(f"{source}: field {name!r} {why}")

    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in _FIELDS if k not in data]
    if missing:
        raise bad(missing[0], f"is missing (required fields: {', '.join(_FIELDS)})")
    fam = data["family"]
    try:
        spec = family_spec(fam)
    except UnknownFamilyError as exc:
        raise bad("family", f"is not a known backbone family: {exc}") from None
    coord = data["coord_space"]
    if coord not in _COORD_SPACES:
        raise bad("coord_space", f"must be one of {', '.join(_COORD_SPACES)}, got {coord!r}")
    if coord != spec.coord_space:
        raise bad(
            "coord_space",
            f"is {coord!r} but family {spec.name!r} writes boxes in {spec.coord_space!r}",
        )
    space = data["label_space"]
    if space is not None and (not isinstance(space, str) or not space.strip()):
        raise bad("label_space", f"must be a label space name or null, got {space!r}")
    labels = data["labels"]
    if (
        not isinstance(labels, list | tuple)
        or not labels
        or not all(isinstance(x, str) and x for x in labels)
    ):
        raise bad("labels", f"must be a non-empty list of label names, got {labels!r}")
    if len(set(labels)) != len(labels):
        raise bad("labels", f"has duplicates: {list(labels)!r}")
    style = data["prompt_style"]
    if style not in _STYLES:
        raise bad("prompt_style", f"must be one of {', '.join(_STYLES)}, got {style!r}")
    det = data["detector"]
    if det is not None and (not isinstance(det, str) or not det.strip()):
        raise bad("detector", f"must be a detector name or null, got {det!r}")
    version = data.get("version", _VERSION)
    if not isinstance(version, int) or version > _VERSION:
        raise bad(
            "version", f"is {version!r}; this TAG reads version {_VERSION} (upgrade tag-model)"
        )
    return {**data, "family": spec.name, "labels": tuple(labels)}


def _settings_path(path: str | os.PathLike[str]) -> Path:
    p = Path(os.path.expanduser(os.fspath(path)))
    return p if p.name == SETTINGS_FILE and not p.is_dir() else p / SETTINGS_FILE


def save_tag_settings(directory: str | os.PathLike[str], settings: TagSettings) -> Path:
    """Write ``settings`` to ``directory/tag_settings.json`` (atomically); returns the path."""
    if not isinstance(settings, TagSettings):
        raise TypeError(f"settings must be a TagSettings, got {type(settings).__name__}")
    d = Path(os.path.expanduser(os.fspath(directory)))
    d.mkdir(parents=True, exist_ok=True)
    path = d / SETTINGS_FILE
    tmp = path.with_name(f".{SETTINGS_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(settings.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_tag_settings(directory: str | os.PathLike[str]) -> TagSettings | None:
    """The settings saved in ``directory`` (or the ``tag_settings.json`` file itself).

    Returns None when the folder holds no ``tag_settings.json`` (a hub id, a base model, a
    checkpoint from before TAG recorded its settings).

    Raises:
        ValueError: the file is not JSON, or a field is missing or wrong; the message names
            the file and the field.
    """
    path = _settings_path(directory)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    return TagSettings.from_dict(data, source=str(path))


def checkpoint_kind(path: str | os.PathLike[str]) -> Literal["full", "adapter"] | None:
    """What the folder ``path`` holds: ``"adapter"`` (a peft folder with
    ``adapter_config.json``), ``"full"`` (``config.json`` and weights), or None (anything
    else, including a hub id or a missing folder).
    """
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.is_dir():
        return None
    if (p / "adapter_config.json").is_file():
        return "adapter"
    if (p / "config.json").is_file() and (
        any((p / w).is_file() for w in _WEIGHTS) or any(p.glob("model-*-of-*.safetensors"))
    ):
        return "full"
    return None
