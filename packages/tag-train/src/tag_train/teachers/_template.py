"""Offline template teacher: varied, grammatical TAG traces from the activated list.

No model is involved. Each trace is built from the FACS catalogue (``tag_model.au``):
the global analysis names the strongest actions, the verification loop inspects each
region of the activated list (AUs sharing one box are grounded together, as in the authors'
"AU4 AU9" step) with the catalogue's visual description, boxes are the activated list's
boxes in the target backbone's coordinate space (the builder converts them with the
backbone adapter), and the conclusion combines the AUs into the answer.

The answer is the gold label when the request carries one (``answer="label"``, the
default) or the best EMFACS-prototype match (``answer="prototype"``). Either way, a label
named in ``request.eliminated`` is never answered (label elimination).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Literal

from tag_train.teachers._base import ActivatedEntry, TeacherReply, TeacherRequest

__all__ = ["TemplateTeacher"]

_GLOBAL_OPENERS = (
    "The face shows {a}.",
    "At first glance, the face shows {a}.",
    "Overall, the expression is marked by {a}.",
    "The most visible change is {a}.",
    "Looking at the whole face, there is {a}.",
)
_GLOBAL_SECOND = (
    " There is also {b}.",
    " It comes with {b}.",
    " We can also see {b}.",
    " In addition, there is {b}.",
)
_NEUTRAL_GLOBAL = (
    "The face is relaxed and no strong muscle action stands out.",
    "Overall, the features rest in a calm, symmetric position.",
    "At first glance, the face shows no marked movement.",
)
# (min prob, adjectives for the global analysis, visibility phrases for a step)
_STRENGTH = (
    (0.85, ("a strong", "a clear", "a marked"), ("clearly visible", "well marked", "pronounced")),
    (0.65, ("a visible", "a moderate"), ("visible", "moderately marked")),
    (0.0, ("a slight", "a subtle", "a faint"), ("faint", "slight but present", "subtle")),
)
_CONCLUSIONS = (
    "Combined {aus} indicate a dominant emotion of {label}.",
    "Taken together, {aus} point to {label}.",
    "The pattern {aus} is most consistent with {label}.",
    "Together, {aus} suggest a dominant emotion of {label}.",
)
_NEUTRAL_CONCLUSIONS = (
    "No emotional action unit is active, which indicates a neutral expression.",
    "With the muscles at rest, the dominant state is neutral.",
)
_REGION_PHRASES = ("the {r}", "the {r} area", "the {r} region")


def _strength(p: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
    for lo, adjectives, phrases in _STRENGTH:
        if p >= lo:
            return adjectives, phrases
    return _STRENGTH[-1][1], _STRENGTH[-1][2]


def _short(description: str) -> str:
    """The first clause of a catalogue description ("cheeks lifted, lower-lid ..." -> "cheeks lifted")."""
    return description.split(";")[0].split(",")[0].split("(")[0].strip()


class TemplateTeacher:
    """An offline teacher writing traces from the activated list with the FACS descriptions.

    Args:
        answer: ``"label"`` answers the request's gold label (the builder passes it to this
            teacher only); ``"prototype"`` answers the label whose EMFACS prototype best
            overlaps the activated AUs. Eliminated labels are skipped in both modes.
        seed: base seed; the wording of each trace is a deterministic function of
            (seed, sample id, attempt), so reruns reproduce it and retries vary it.
        variety: 0 writes one fixed wording; 1 draws from every template.
        max_steps: the most regions inspected per trace.
        style: ``"full"`` uses the whole catalogue description in each step and a two-part
            global analysis; ``"compact"`` uses its first clause and one sentence (about
            half the tokens; the CPU demo uses it).
        rationalize: the probability that a trace also names one AU of the answer's EMFACS
            prototypes that the activated list lacks, in the step of an activated AU of the
            same region (and in the conclusion). This imitates a language-model teacher that
            fits the face to the expression it must answer: a claim the detector does not
            support, which the grounding reward penalises. 0 (the default): the activated list
            only. Drawn from its own random stream, so the wording does not change.
    """

    def __init__(
        self,
        *,
        answer: Literal["label", "prototype"] = "label",
        seed: int = 0,
        variety: float = 1.0,
        max_steps: int = 6,
        style: Literal["full", "compact"] = "full",
        rationalize: float = 0.0,
    ) -> None:
        if not 0.0 <= rationalize <= 1.0:
            raise ValueError(f"rationalize must be in [0, 1], got {rationalize!r}")
        self.rationalize = float(rationalize)
        if answer not in ("label", "prototype"):
            raise ValueError(f"answer must be 'label' or 'prototype', got {answer!r}")
        self.answer = answer
        self.seed = seed
        self.variety = float(variety)
        self.max_steps = max_steps
        if style not in ("full", "compact"):
            raise ValueError(f"style must be 'full' or 'compact', got {style!r}")
        self.style = style
        self.name = f"template:{answer}"
        self.uses_gold_label = answer == "label"
        from tag_model.au import AU_CATALOGUE

        self._cat = AU_CATALOGUE

    # -- answer -------------------------------------------------------------------------------

    def choose_label(self, request: TeacherRequest) -> str:
        """The label this teacher answers for ``request`` (never an eliminated one)."""
        allowed = [lab for lab in request.labels if lab not in set(request.eliminated)]
        if not allowed:
            allowed = list(request.labels)
        if self.answer == "label" and request.label is not None and request.label in allowed:
            return request.label
        from tag_model.au import EMFACS_PROTOTYPES

        present = {e.au: e.prob for e in request.activated}

        def score(lab: str) -> float:
            protos = EMFACS_PROTOTYPES.get(lab, ())
            if not protos or lab == "neutral":
                return 0.5 if not present else 0.0
            best = 0.0
            for v in protos:
                if v:
                    best = max(best, sum(present.get(a, 0.0) for a in v) / len(v))
            return best

        return max(allowed, key=lambda lab: (score(lab), -allowed.index(lab)))

    # -- text ---------------------------------------------------------------------------------

    def _rng(self, request: TeacherRequest) -> random.Random:
        h = hashlib.blake2b(
            f"{self.seed}|{request.sample_id}|{request.attempt}".encode(), digest_size=8
        )
        return random.Random(int.from_bytes(h.digest(), "little"))

    def _pick(self, rng: random.Random, options: Sequence[str]) -> str:
        if self.variety <= 0 or rng.random() > self.variety:
            return options[0]
        return rng.choice(options)

    def _groups(self, activated: Sequence[ActivatedEntry]) -> list[list[ActivatedEntry]]:
        groups: dict[tuple[int, ...], list[ActivatedEntry]] = {}
        for e in activated:
            key = tuple(round(v) for v in e.model_box)
            groups.setdefault(key, []).append(e)
        return list(groups.values())[: self.max_steps]

    def write(self, request: TeacherRequest) -> str:
        """One trace for ``request`` (deterministic in seed, sample id and attempt)."""
        from tag_model.grounding import TraceStep, render_trace

        rng = self._rng(request)
        label = self.choose_label(request)
        groups = self._groups(request.activated)
        if self.rationalize > 0:
            self._add_rationalized(request, label, groups)
        cat = self._cat
        if groups:
            top = sorted(request.activated, key=lambda e: -e.prob)
            ga = self._pick(rng, _GLOBAL_OPENERS).format(a=self._clause(top[0], rng))
            if len(top) > 1 and self.style == "full":
                ga += self._pick(rng, _GLOBAL_SECOND).format(b=self._clause(top[1], rng))
        else:
            ga = self._pick(rng, _NEUTRAL_GLOBAL)
        steps = []
        for g in groups:
            first = cat.get(g[0].au)
            region = first.region if first else "face"
            steps.append(
                TraceStep(
                    self._pick(rng, _REGION_PHRASES).format(r=region),
                    self._observation(g, rng),
                    tuple(dict.fromkeys(e.au for e in g)),
                    tuple(float(round(v)) for v in g[0].model_box),
                )
            )
        if not steps and request.face_box is not None:
            steps.append(
                TraceStep(
                    "the whole face",
                    "the muscles are at rest, with no action above threshold",
                    (),
                    tuple(float(round(v)) for v in request.face_box),
                )
            )
        aus_sorted = sorted({e.au for g in groups for e in g})
        if label == "neutral" or not aus_sorted:
            conclusion_aus: list[int] = []
            ctext = (
                self._pick(rng, _NEUTRAL_CONCLUSIONS)
                if label == "neutral"
                else f"The overall configuration indicates {label}."
            )
        else:
            conclusion_aus = aus_sorted
            aus_txt = " + ".join(f"AU{a}" for a in aus_sorted)
            ctext = self._pick(rng, _CONCLUSIONS).format(aus=aus_txt, label=label)
        return render_trace(ga, steps, conclusion_aus, label, conclusion_text=ctext)

    def _add_rationalized(
        self, request: TeacherRequest, label: str, groups: list[list[ActivatedEntry]]
    ) -> None:
        """With probability ``rationalize``, add one unsupported prototype AU of ``label`` to
        the group of an activated AU in the same region (in place)."""
        from tag_model.au import EMFACS_PROTOTYPES

        h = hashlib.blake2b(
            f"rationalize|{self.seed}|{request.sample_id}|{request.attempt}".encode(),
            digest_size=8,
        )
        rng = random.Random(int.from_bytes(h.digest(), "little"))
        if rng.random() >= self.rationalize:
            return
        present = {e.au for g in groups for e in g}
        by_region: dict[str, list[ActivatedEntry]] = {}
        for g in groups:
            au = self._cat.get(g[0].au)
            if au is not None:
                by_region.setdefault(au.region, g)
        options = sorted({a for proto in EMFACS_PROTOTYPES.get(label, ()) for a in proto} - present)
        options = [a for a in options if a in self._cat and self._cat[a].region in by_region]
        if not options:
            return
        a = rng.choice(options)
        g = by_region[self._cat[a].region]
        g.append(ActivatedEntry(a, 0.5, g[0].box, g[0].model_box))

    def _clause(self, e: ActivatedEntry, rng: random.Random) -> str:
        """``"a strong cheek raiser: cheeks lifted, ..."`` (full) or ``"a strong cheek raiser"``."""
        au = self._cat.get(e.au)
        adjective = self._pick(rng, _strength(e.prob)[0])
        if au is None:
            return f"{adjective} action of AU{e.au}"
        text = f"{adjective} {au.name.lower()}"
        if self.style == "full":
            text += ": " + au.description.split(";")[0].strip()
        return text

    def _observation(self, group: Sequence[ActivatedEntry], rng: random.Random) -> str:
        parts = []
        for e in group:
            au = self._cat.get(e.au)
            if au is None:
                parts.append(f"action of AU{e.au}")
                continue
            desc = (
                au.description.split(";")[0].strip()
                if self.style == "full"
                else _short(au.description)
            )
            parts.append(f"{desc}, {self._pick(rng, _strength(e.prob)[1])}")
        return "; ".join(parts)

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherReply]:
        return [
            TeacherReply(
                self.write(r),
                {
                    "teacher": self.name,
                    "model": "template",
                    "seed": self.seed,
                    "attempt": r.attempt,
                },
            )
            for r in requests
        ]
