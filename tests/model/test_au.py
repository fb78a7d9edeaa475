"""AU knowledge: FACS catalogue, EMFACS prototypes, label spaces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tag_model.au import (
    AFFECTNET7,
    AFFECTNET8,
    AFFECTNET_CODES,
    AU_CATALOGUE,
    CANONICAL_LABELS,
    EMFACS_PROTOTYPES,
    EMFACS_VARIANTS,
    FACE_REGIONS,
    FERPLUS,
    RAFDB,
    canonical_label,
    consistent_with,
    get_label_space,
    prototype_aus,
)

REQUIRED_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 18, 20, 22, 23, 24, 25, 26, 27,
                28, 43, 45)  # fmt: skip


def test_catalogue_covers_required_aus_with_all_fields() -> None:
    for au in REQUIRED_AUS:
        entry = AU_CATALOGUE[au]
        assert entry.number == au and entry.code == f"AU{au}"
        assert entry.name and entry.muscle and entry.description
        assert entry.region in FACE_REGIONS


def test_catalogue_known_names() -> None:
    assert AU_CATALOGUE[12].name == "Lip Corner Puller"
    assert "zygomaticus major" in AU_CATALOGUE[12].muscle
    assert AU_CATALOGUE[4].name == "Brow Lowerer"
    assert AU_CATALOGUE[6].name == "Cheek Raiser"
    assert AU_CATALOGUE[17].name == "Chin Raiser"


def test_prototypes_every_emotion_has_sourced_variants() -> None:
    assert set(EMFACS_PROTOTYPES) == set(CANONICAL_LABELS)
    assert EMFACS_PROTOTYPES["neutral"] == (frozenset(),)
    for label, variants in EMFACS_VARIANTS.items():
        assert variants, label
        for v in variants:
            assert v.source and v.label == label
            assert all(a in AU_CATALOGUE for a in v.aus), (label, v.aus)
    # EMFACS-7 primary prototypes (Friesen & Ekman 1983).
    assert prototype_aus("happiness") == {6, 12}
    assert prototype_aus("sadness") == {1, 4, 15}
    assert prototype_aus("surprise") == {1, 2, 5, 26}
    assert prototype_aus("fear") == {1, 2, 4, 5, 7, 20, 26}
    assert prototype_aus("anger") == {4, 5, 7, 23}
    assert prototype_aus("disgust") == {9, 15, 16}
    # Sources disagree: variants are kept, not merged.
    assert frozenset({4, 10, 17}) in EMFACS_PROTOTYPES["disgust"]
    assert frozenset({12, 25}) in EMFACS_PROTOTYPES["happiness"]
    assert prototype_aus("disgust", mode="union") >= {9, 10, 15, 16, 17}


def test_prototype_aus_errors() -> None:
    with pytest.raises(ValueError, match="unknown emotion"):
        prototype_aus("joy")
    with pytest.raises(ValueError, match="mode"):
        prototype_aus("happy", mode="max")  # type: ignore[arg-type]


def test_consistent_with_rule() -> None:
    assert consistent_with({6, 12}, "happiness")
    assert consistent_with({12}, "happy")  # half of 6+12
    assert consistent_with({12, 25, 26}, "happiness")  # extras allowed
    assert not consistent_with({4, 7}, "happiness")
    assert consistent_with({1, 2, 26}, "surprise")
    assert not consistent_with({1}, "fear")  # 1 of 4 (DTM14) is below half
    assert consistent_with(set(), "neutral")
    assert not consistent_with({12}, "neutral")
    assert not consistent_with({1, 4}, "fear", min_overlap=1.0)
    with pytest.raises(ValueError):
        consistent_with({1}, "fear", min_overlap=0.0)


@given(st.sampled_from(sorted(EMFACS_PROTOTYPES)))
def test_every_variant_is_consistent_with_its_label(label: str) -> None:
    for v in EMFACS_PROTOTYPES[label]:
        assert consistent_with(v, label, min_overlap=1.0)


def test_label_spaces_order_and_codes() -> None:
    assert RAFDB.names == (
        "surprise",
        "fear",
        "disgust",
        "happiness",
        "sadness",
        "anger",
        "neutral",
    )
    assert RAFDB.file_codes == (1, 2, 3, 4, 5, 6, 7)
    assert RAFDB.code_of("happy") == 4 and RAFDB.name_of_code(7) == "neutral"
    assert RAFDB.id_of("Surprised") == 0
    assert FERPLUS.names == (
        "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
    )  # fmt: skip
    assert len(AFFECTNET8) == 8 and len(AFFECTNET7) == 7
    assert AFFECTNET8.names[7] == "contempt" and "contempt" not in AFFECTNET7
    assert AFFECTNET8.name_of_code(1) == "happiness"
    assert AFFECTNET_CODES[8] == "none" and AFFECTNET_CODES[10] == "no-face"
    for space in (RAFDB, FERPLUS, AFFECTNET7, AFFECTNET8):
        assert set(space.names) <= set(CANONICAL_LABELS)
        for i, name in enumerate(space.names):
            assert space.id_of(name) == i
    with pytest.raises(KeyError, match="contempt"):
        RAFDB.id_of("contempt")
    with pytest.raises(KeyError):
        RAFDB.name_of_code(0)
    with pytest.raises(ValueError, match="no file codes"):
        FERPLUS.code_of("happy")


def test_get_label_space() -> None:
    assert get_label_space("RAF-DB") is RAFDB
    assert get_label_space(" ferplus ") is FERPLUS
    assert get_label_space("affectnet7") is AFFECTNET7
    with pytest.raises(KeyError, match="known"):
        get_label_space("ckplus")


@pytest.mark.parametrize(
    ("text", "canon"),
    [
        ("happy", "happiness"), ("HAPPINESS", "happiness"), (" sad\n", "sadness"),
        ("angry", "anger"), ("Surprised", "surprise"), ("fearful", "fear"), ("afraid", "fear"),
        ("disgusted", "disgust"), ("contemptuous", "contempt"), ("neutral", "neutral"),
        ("joy", None), ("", None), ("happy sad", None),
    ],
)  # fmt: skip
def test_canonical_label(text: str, canon: str | None) -> None:
    assert canonical_label(text) == canon


@given(st.sampled_from(CANONICAL_LABELS), st.sampled_from(["", " ", "\t"]), st.booleans())
def test_canonical_label_is_idempotent_and_case_insensitive(name: str, pad: str, up: bool) -> None:
    text = pad + (name.upper() if up else name) + pad
    assert canonical_label(text) == name
    assert canonical_label(canonical_label(text) or "") == name
