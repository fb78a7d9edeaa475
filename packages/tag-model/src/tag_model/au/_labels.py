"""Emotion label spaces of the FER datasets TAG trains and evaluates on.

Every space lists canonical names (lower-case nouns) in label-id order; ``file_codes`` gives
the integer each dataset's own files use for the same class (RAF-DB numbers 1-7, AffectNet
0-7; FERPlus uses vote columns, so it has none).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "AFFECTNET7",
    "AFFECTNET8",
    "AFFECTNET_CODES",
    "CANONICAL_LABELS",
    "FERPLUS",
    "LABEL_SPACES",
    "RAFDB",
    "LabelSpace",
    "canonical_label",
    "get_label_space",
]

CANONICAL_LABELS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "sadness",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
)
"""The eight canonical emotion names (noun form)."""

LABEL_SYNONYMS: Mapping[str, str] = MappingProxyType(
    {
        "neutral": "neutral",
        "happiness": "happiness",
        "happy": "happiness",
        "sadness": "sadness",
        "sad": "sadness",
        "surprise": "surprise",
        "surprised": "surprise",
        "fear": "fear",
        "fearful": "fear",
        "afraid": "fear",
        "disgust": "disgust",
        "disgusted": "disgust",
        "anger": "anger",
        "angry": "anger",
        "contempt": "contempt",
        "contemptuous": "contempt",
    }
)
"""Every accepted spelling (lower case, single spaces) mapped to its canonical label."""


def canonical_label(text: str) -> str | None:
    """Canonical name for ``text`` (case/whitespace-insensitive), or ``None`` if unknown.

    >>> canonical_label("  Happy "), canonical_label("afraid"), canonical_label("joyful")
    ('happiness', 'fear', None)
    """
    if not isinstance(text, str):
        return None
    key = " ".join(text.split()).lower()
    return LABEL_SYNONYMS.get(key)


@dataclass(frozen=True)
class LabelSpace:
    """An ordered set of class names; the index of a name is its label id.

    Attributes:
        name: the space's name (``"rafdb"``, ``"ferplus"``, ``"affectnet7"``, ``"affectnet8"``).
        names: canonical class names, index = label id.
        file_codes: the integer the dataset's files use for ``names[i]`` (``None`` if the
            dataset has no integer codes).
    """

    name: str
    names: tuple[str, ...]
    file_codes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        bad = [n for n in self.names if n not in CANONICAL_LABELS]
        if bad:
            raise ValueError(f"label space {self.name!r}: non-canonical names {bad}")
        if self.file_codes is not None and len(self.file_codes) != len(self.names):
            raise ValueError(f"label space {self.name!r}: file_codes/names length mismatch")

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, label: object) -> bool:
        return isinstance(label, str) and canonical_label(label) in self.names

    def id_of(self, label: str) -> int:
        """Label id of ``label`` (synonyms accepted); ``KeyError`` if not in this space."""
        canon = canonical_label(label)
        if canon is None or canon not in self.names:
            raise KeyError(f"{label!r} is not a class of label space {self.name!r} {self.names}")
        return self.names.index(canon)

    def code_of(self, label: str) -> int:
        """The dataset file code of ``label``."""
        if self.file_codes is None:
            raise ValueError(f"label space {self.name!r} has no file codes")
        return self.file_codes[self.id_of(label)]

    def name_of_code(self, code: int) -> str:
        """Canonical name for the dataset file code ``code``; ``KeyError`` if unknown."""
        if self.file_codes is None:
            raise ValueError(f"label space {self.name!r} has no file codes")
        try:
            return self.names[self.file_codes.index(int(code))]
        except ValueError:
            raise KeyError(
                f"code {code!r} is not used by label space {self.name!r} (codes {self.file_codes})"
            ) from None


RAFDB = LabelSpace(
    "rafdb",
    ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"),
    file_codes=(1, 2, 3, 4, 5, 6, 7),
)
"""RAF-DB basic: ``list_patition_label.txt`` codes 1..7 in this order."""

FERPLUS = LabelSpace(
    "ferplus",
    ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"),
)
"""FERPlus: the 8 emotion vote columns of ``fer2013new.csv`` in file order (the file also
has ``unknown`` and ``NF`` columns, which are not classes)."""

AFFECTNET_CODES: dict[int, str] = {
    0: "neutral",
    1: "happy",
    2: "sad",
    3: "surprise",
    4: "fear",
    5: "disgust",
    6: "anger",
    7: "contempt",
    8: "none",
    9: "uncertain",
    10: "no-face",
}
"""AffectNet ``expression`` codes 0-10 as written in its manual (8-10 are not emotions)."""

AFFECTNET8 = LabelSpace(
    "affectnet8",
    ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"),
    file_codes=(0, 1, 2, 3, 4, 5, 6, 7),
)
AFFECTNET7 = LabelSpace("affectnet7", AFFECTNET8.names[:7], file_codes=(0, 1, 2, 3, 4, 5, 6))

LABEL_SPACES: dict[str, LabelSpace] = {s.name: s for s in (RAFDB, FERPLUS, AFFECTNET7, AFFECTNET8)}
_ALIASES = {"raf-db": "rafdb", "raf_db": "rafdb", "fer+": "ferplus", "fer_plus": "ferplus"}


def get_label_space(name: str) -> LabelSpace:
    """The label space called ``name`` (case-insensitive; ``raf-db``, ``fer+`` accepted)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return LABEL_SPACES[key]
    except KeyError:
        raise KeyError(f"unknown label space {name!r}; known: {sorted(LABEL_SPACES)}") from None
