"""Action Unit knowledge: the FACS catalogue, EMFACS emotion prototypes and label spaces."""

from tag_model.au._catalogue import AU_CATALOGUE, FACE_REGIONS, ActionUnit, au_name
from tag_model.au._emfacs import (
    EMFACS_PROTOTYPES,
    EMFACS_VARIANTS,
    PrototypeVariant,
    consistent_with,
    prototype_aus,
)
from tag_model.au._labels import (
    AFFECTNET7,
    AFFECTNET8,
    AFFECTNET_CODES,
    CANONICAL_LABELS,
    FERPLUS,
    LABEL_SPACES,
    LABEL_SYNONYMS,
    RAFDB,
    LabelSpace,
    canonical_label,
    get_label_space,
)

__all__ = [
    "AFFECTNET7",
    "AFFECTNET8",
    "AFFECTNET_CODES",
    "AU_CATALOGUE",
    "CANONICAL_LABELS",
    "EMFACS_PROTOTYPES",
    "EMFACS_VARIANTS",
    "FACE_REGIONS",
    "FERPLUS",
    "LABEL_SPACES",
    "LABEL_SYNONYMS",
    "RAFDB",
    "ActionUnit",
    "LabelSpace",
    "PrototypeVariant",
    "au_name",
    "canonical_label",
    "consistent_with",
    "get_label_space",
    "prototype_aus",
]
