"""EMFACS-style emotion prototypes: which AU combinations signal which basic emotion.

Sources (variants are kept where they disagree; none is invented):

* **EF83** — Friesen & Ekman (1983), *EMFACS-7: Emotional Facial Action Coding System*
  (unpublished manual, UCSF), as usually tabulated: happiness 6+12; sadness 1+4+15;
  surprise 1+2+5B+26; fear 1+2+4+5+7+20+26; anger 4+5+7+23; disgust 9+15+16;
  contempt R12A+R14A (unilateral). Intensity letters (5B) and sides (R) are dropped
  here: prototypes are sets of AU numbers.
* **FACS78** — Ekman & Friesen (1978), FACS manual Table 11-1 ("most intense"
  combinations often quoted from it): joy 6+12+25; sadness 1+4+15; disgust 4+10+17;
  anger 4+5+7+24; surprise 1+2+5+26; fear 1+2+4+5+20+25.
* **M-EMFACS** — further EMFACS / Matsumoto & Ekman variants in common use: sadness
  1+4+15+17 and 6+15; surprise 1+2+5+27 and 1+2+26 (no 5); fear 1+2+4+5+20+25+26;
  anger 4+5+7+17+23 and 4+5+7+23+24; disgust 9, 10, 9+17, 10+17; contempt 14 (unilateral).
* **DTM14** — Du, Tao & Martinez (2014), "Compound facial expressions of emotion",
  PNAS 111(15):E1454, Table 1: the AUs active in more than 70% of 230 subjects for the six
  basic emotions: happiness 12+25; sadness 4+15; fear 1+4+20+25; anger 4+7+24;
  surprise 1+2+25+26; disgust 9+10+17. (Their bracketed inter-subject variants are not
  reproduced here.)

Neutral has the single empty prototype.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "EMFACS_PROTOTYPES",
    "EMFACS_VARIANTS",
    "PrototypeVariant",
    "consistent_with",
    "prototype_aus",
]


@dataclass(frozen=True, slots=True)
class PrototypeVariant:
    """One prototype AU combination for an emotion, with where it comes from."""

    label: str
    aus: frozenset[int]
    source: str


def _v(label: str, aus: Iterable[int], source: str) -> PrototypeVariant:
    return PrototypeVariant(label=label, aus=frozenset(aus), source=source)


EMFACS_VARIANTS: dict[str, tuple[PrototypeVariant, ...]] = {
    "neutral": (_v("neutral", (), "no action"),),
    "happiness": (
        _v("happiness", (6, 12), "EF83"),
        _v("happiness", (6, 12, 25), "FACS78"),
        _v("happiness", (12, 25), "DTM14"),
    ),
    "sadness": (
        _v("sadness", (1, 4, 15), "EF83; FACS78"),
        _v("sadness", (1, 4, 15, 17), "M-EMFACS"),
        _v("sadness", (6, 15), "M-EMFACS"),
        _v("sadness", (4, 15), "DTM14"),
    ),
    "surprise": (
        _v("surprise", (1, 2, 5, 26), "EF83; FACS78"),
        _v("surprise", (1, 2, 5, 27), "M-EMFACS"),
        _v("surprise", (1, 2, 26), "M-EMFACS"),
        _v("surprise", (1, 2, 25, 26), "DTM14"),
    ),
    "fear": (
        _v("fear", (1, 2, 4, 5, 7, 20, 26), "EF83"),
        _v("fear", (1, 2, 4, 5, 20, 25), "FACS78"),
        _v("fear", (1, 2, 4, 5, 20, 25, 26), "M-EMFACS"),
        _v("fear", (1, 4, 20, 25), "DTM14"),
    ),
    "anger": (
        _v("anger", (4, 5, 7, 23), "EF83"),
        _v("anger", (4, 5, 7, 24), "FACS78"),
        _v("anger", (4, 5, 7, 17, 23), "M-EMFACS"),
        _v("anger", (4, 5, 7, 23, 24), "M-EMFACS"),
        _v("anger", (4, 7, 24), "DTM14"),
    ),
    "disgust": (
        _v("disgust", (9, 15, 16), "EF83"),
        _v("disgust", (4, 10, 17), "FACS78"),
        _v("disgust", (9, 17), "M-EMFACS"),
        _v("disgust", (10, 17), "M-EMFACS"),
        _v("disgust", (9, 10, 17), "DTM14"),
    ),
    "contempt": (
        _v("contempt", (12, 14), "EF83 (unilateral R12A+R14A)"),
        _v("contempt", (14,), "M-EMFACS (unilateral 14)"),
    ),
}
"""Canonical label -> its prototype variants, the first being the primary (EF83) one."""

EMFACS_PROTOTYPES: dict[str, tuple[frozenset[int], ...]] = {
    label: tuple(v.aus for v in variants) for label, variants in EMFACS_VARIANTS.items()
}
"""Canonical label -> tuple of AU sets (index 0 is the primary EMFACS-7 prototype)."""


def _canon(label: str) -> str:
    from tag_model.au._labels import canonical_label

    canon = canonical_label(label)
    if canon is None or canon not in EMFACS_PROTOTYPES:
        raise ValueError(f"unknown emotion label {label!r}; known: {sorted(EMFACS_PROTOTYPES)}")
    return canon


def prototype_aus(label: str, mode: Literal["primary", "union"] = "primary") -> frozenset[int]:
    """AUs of the prototype for ``label`` (synonyms accepted).

    ``mode="primary"`` returns the first variant (Friesen & Ekman 1983, EMFACS-7);
    ``mode="union"`` returns every AU named by any variant.

    >>> sorted(prototype_aus("happy"))
    [6, 12]
    """
    variants = EMFACS_PROTOTYPES[_canon(label)]
    if mode == "primary":
        return variants[0]
    if mode == "union":
        return frozenset().union(*variants)
    raise ValueError(f"mode must be 'primary' or 'union', got {mode!r}")


def consistent_with(aus: Iterable[int], label: str, *, min_overlap: float = 0.5) -> bool:
    """Whether the AU set ``aus`` agrees with some EMFACS variant of ``label``.

    Rule: for ``neutral``, ``aus`` must be empty. For any other emotion, ``aus`` is
    consistent when there is a variant ``V`` with ``|aus ∩ V| >= ceil(min_overlap * |V|)``
    (at least one AU). Extra AUs outside ``V`` do not make it inconsistent — detectors
    report co-occurring actions — so this is an agreement test, not an exact match.

    >>> consistent_with({6, 12}, "happiness"), consistent_with({4, 5}, "happiness")
    (True, False)
    """
    if not 0.0 < min_overlap <= 1.0:
        raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap!r}")
    canon = _canon(label)
    present = {int(a) for a in aus}
    if canon == "neutral":
        return not present
    for variant in EMFACS_PROTOTYPES[canon]:
        need = max(1, math.ceil(min_overlap * len(variant) - 1e-9))
        if len(present & variant) >= need:
            return True
    return False
