"""The FACS Action Unit catalogue.

Names and muscles follow the FACS manual (Ekman, Friesen & Hager, *Facial Action Coding
System*, 2002; first edition Ekman & Friesen 1978). ``region`` is a coarse face-region name
used in traces ("Inspect <region> → ..."); it is *not* a box recipe — box recipes live in
``tag_kernels.IBUG68_REGIONS``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AU_CATALOGUE", "FACE_REGIONS", "ActionUnit", "au_name"]


@dataclass(frozen=True, slots=True)
class ActionUnit:
    """One FACS Action Unit.

    Attributes:
        number: FACS number (AU12 -> ``12``).
        name: FACS name, e.g. ``"Lip Corner Puller"``.
        muscle: the muscle(s) behind the action.
        description: one line on what the action looks like.
        region: coarse face-region name (one of :data:`FACE_REGIONS`).
    """

    number: int
    name: str
    muscle: str
    description: str
    region: str

    @property
    def code(self) -> str:
        """``"AU12"``-style code."""
        return f"AU{self.number}"


FACE_REGIONS: tuple[str, ...] = (
    "forehead",
    "brows",
    "glabella",
    "eyes",
    "cheeks",
    "nose",
    "upper lip",
    "lip corners",
    "mouth",
    "lower lip",
    "chin",
    "jaw",
)

_ROWS: tuple[tuple[int, str, str, str, str], ...] = (
    (1, "Inner Brow Raiser", "frontalis, pars medialis",
     "inner ends of the brows rise; horizontal wrinkles in the centre of the forehead", "brows"),
    (2, "Outer Brow Raiser", "frontalis, pars lateralis",
     "outer ends of the brows rise, arching the brow; lateral forehead wrinkles", "brows"),
    (4, "Brow Lowerer", "depressor glabellae, depressor supercilii, corrugator supercilii",
     "brows lowered and drawn together; vertical furrows between the brows", "glabella"),
    (5, "Upper Lid Raiser", "levator palpebrae superioris",
     "upper eyelid raised, widening the eye and exposing more sclera above the iris", "eyes"),
    (6, "Cheek Raiser", "orbicularis oculi, pars orbitalis",
     "cheeks lifted, lower-lid skin bunched, crow's-feet wrinkles at the outer eye corners",
     "cheeks"),
    (7, "Lid Tightener", "orbicularis oculi, pars palpebralis",
     "eyelids tightened, lower lid raised and straightened, narrowing the eye", "eyes"),
    (9, "Nose Wrinkler", "levator labii superioris alaeque nasi",
     "skin of the nose wrinkled upward, nostril wings lifted, brows pulled down medially",
     "nose"),
    (10, "Upper Lip Raiser", "levator labii superioris",
     "upper lip raised, deepening the nasolabial furrow", "upper lip"),
    (11, "Nasolabial Deepener", "zygomaticus minor",
     "nasolabial furrow deepened, pulling the upper lip slightly up and out", "cheeks"),
    (12, "Lip Corner Puller", "zygomaticus major",
     "lip corners pulled up and back (a smile); nasolabial furrow deepened", "lip corners"),
    (13, "Sharp Lip Puller", "levator anguli oris (caninus)",
     "lip corners pulled up sharply, cheeks puffed under the corners", "lip corners"),
    (14, "Dimpler", "buccinator",
     "lip corners tightened and pulled inward, dimples forming beside them", "lip corners"),
    (15, "Lip Corner Depressor", "depressor anguli oris (triangularis)",
     "lip corners pulled down, the lip line angled downward", "lip corners"),
    (16, "Lower Lip Depressor", "depressor labii inferioris",
     "lower lip pulled down and slightly out, exposing the lower teeth", "lower lip"),
    (17, "Chin Raiser", "mentalis",
     "chin boss pushed up, lower lip pushed up and out, chin skin wrinkled", "chin"),
    (18, "Lip Pucker", "incisivii labii superioris and inferioris",
     "lips pushed forward and drawn together into a pucker", "mouth"),
    (20, "Lip Stretcher", "risorius with platysma",
     "lip corners pulled sideways, the mouth elongated and flattened", "lip corners"),
    (22, "Lip Funneler", "orbicularis oris",
     "lips funnelled outward, often exposing teeth and gums", "mouth"),
    (23, "Lip Tightener", "orbicularis oris",
     "lips tightened and narrowed, the red of the lips thinned", "mouth"),
    (24, "Lip Pressor", "orbicularis oris",
     "lips pressed together, bulging the skin around them", "mouth"),
    (25, "Lips Part", "depressor labii inferioris, or relaxed mentalis / orbicularis oris",
     "lips separated, showing the inside of the mouth or the teeth", "mouth"),
    (26, "Jaw Drop", "masseter relaxed; temporalis and internal pterygoid relaxed",
     "jaw lowered by relaxation, the mouth falls open", "jaw"),
    (27, "Mouth Stretch", "pterygoids, digastric",
     "mouth stretched wide open with the jaw pulled down", "jaw"),
    (28, "Lip Suck", "orbicularis oris",
     "lips sucked in over the teeth", "mouth"),
    (43, "Eyes Closed", "relaxation of levator palpebrae superioris; orbicularis oculi",
     "eyes closed by the upper lids, held shut", "eyes"),
    (45, "Blink", "relaxation of levator palpebrae superioris; orbicularis oculi",
     "eyes closed and reopened quickly", "eyes"),
)  # fmt: skip

AU_CATALOGUE: dict[int, ActionUnit] = {
    row[0]: ActionUnit(number=row[0], name=row[1], muscle=row[2], description=row[3], region=row[4])
    for row in _ROWS
}
"""FACS number -> :class:`ActionUnit`."""


def au_name(au: int) -> str:
    """FACS name of ``au`` (``"AU99"`` style fallback for numbers not in the catalogue)."""
    entry = AU_CATALOGUE.get(int(au))
    return entry.name if entry is not None else f"AU{int(au)}"
