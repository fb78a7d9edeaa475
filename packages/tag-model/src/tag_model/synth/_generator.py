"""SynthFACS: seeded synthetic faces whose landmarks, AU intensities and labels are known."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from tag_model.au import EMFACS_VARIANTS, RAFDB, canonical_label
from tag_model.synth._render import Appearance, Pose, render_face
from tag_model.synth._shape import NEUTRAL_SHAPE, SYNTH_AUS, expression_shape

__all__ = ["PRESENCE_THRESHOLD", "SynthFACS", "SynthSample"]

PRESENCE_THRESHOLD: float = 0.25
"""An AU counts as *present* (ground truth) when its intensity is at least this.

Intensities are on a 0-1 scale (1 = the strongest the renderer draws, FACS "E");
multiply by 5 for OpenFace's 0-5 scale. Present AUs are sampled in [0.35, 1]; sub-threshold
"trace" activity in [0.03, 0.15], so no sample sits near the threshold by construction."""

_SKIN = ((241, 204, 178), (232, 184, 150), (214, 160, 124), (186, 130, 96), (150, 100, 72),
         (112, 74, 54), (246, 214, 192))  # fmt: skip
_HAIR = ((24, 20, 18), (58, 38, 28), (98, 66, 42), (176, 144, 96), (140, 138, 136), (118, 52, 30))
_IRIS = ((92, 60, 38), (64, 96, 140), (80, 112, 70), (122, 92, 52), (48, 38, 32))
# AU pairs never drawn together (antagonists, or actions that hide each other).
_EXCLUSIVE = ({12, 15}, {5, 43}, {17, 25}, {17, 26}, {17, 16}, {23, 25}, {24, 25}, {14, 20})


@dataclass(frozen=True)
class SynthSample:
    """One SynthFACS face.

    Attributes:
        image: ``PIL.Image`` RGB, ``size × size`` (``None`` from ``sample(i, render=False)``).
        landmarks: ``float32[68, 2]`` iBUG-68 points in image pixel-index coordinates
            (exactly where they were drawn).
        au_intensity: AU -> intensity in (0, 1] for every AU that moved (present and trace).
        label: canonical emotion name.
        index: the sample index; ``variant``: the EMFACS variant the AUs were drawn from.
    """

    image: Image.Image | None
    landmarks: np.ndarray
    au_intensity: dict[int, float]
    label: str
    index: int = 0
    variant: frozenset[int] = field(default_factory=frozenset)

    def active_aus(self, threshold: float = PRESENCE_THRESHOLD) -> frozenset[int]:
        """AUs with intensity ``>= threshold`` (the ground-truth AU set)."""
        return frozenset(au for au, v in self.au_intensity.items() if v >= threshold)


def _jitter_rgb(rng: np.random.Generator, c: Sequence[int], amount: int) -> tuple[int, int, int]:
    d = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(np.clip(c[i] + d[i], 0, 255)) for i in range(3))  # type: ignore[return-value]


class SynthFACS:
    """Deterministic generator of synthetic expressive faces (an indexable, endless dataset).

    ``sample(i)`` is a pure function of ``(seed, i)``: the random stream is
    ``numpy.random.default_rng(SeedSequence([seed, i]))``. The label of sample ``i`` is
    ``labels[i % len(labels)]`` (classes are balanced over any run of indices).

    How a sample is made:

    1. pick one EMFACS variant of the label (:data:`tag_model.au.EMFACS_VARIANTS`), keeping
       only AUs the renderer draws (AU27 and the like are dropped);
    2. drop each AU with probability 0.15, keeping at least 60% of the variant (so the set
       stays :func:`~tag_model.au.consistent_with` the label);
    3. AU26 and AU16 bring AU25 (lips part) with them, as in FACS coding practice;
    4. intensities: a per-sample strength in [0.45, 1] times a per-AU factor in
       [0.75, 1.2], clipped to [0.35, 1];
    5. jitter: 5% of non-surprise/fear faces get AU43 (eyes closed); 30% get one random
       sub-threshold "trace" AU; contempt is unilateral (one random side);
    6. identity (face proportions, eye/brow/nose/mouth geometry), pose (scale, position,
       ±8° roll), colours (skin, hair, iris, background), blur, brightness and pixel noise.

    Args:
        size: output side in pixels (112-224 is the intended range; 48-512 accepted).
        seed: dataset seed.
        labels: class names (synonyms accepted); defaults to RAF-DB's 7 classes.
        oversample: supersampling factor for anti-aliasing (default: 3 below 160 px, else 2).
        variation: widens the pose and lighting ranges by this factor about their centres
            (face scale, position offset, roll, brightness, contrast); 1 gives the ranges
            above, and the same samples as before the option existed. ``tag-train pretrain``
            uses 1.6, so its base model is not tuned to the demo's narrower faces.
    """

    def __init__(
        self,
        size: int = 112,
        seed: int = 0,
        labels: Sequence[str] = RAFDB.names,
        *,
        oversample: int | None = None,
        variation: float = 1.0,
    ) -> None:
        if not 0.0 <= float(variation) <= 2.0:
            raise ValueError(f"SynthFACS variation must be in [0, 2], got {variation!r}")
        if not 48 <= int(size) <= 512:
            raise ValueError(f"SynthFACS size must be in [48, 512] pixels, got {size!r}")
        if int(seed) < 0:
            raise ValueError(f"SynthFACS seed must be >= 0, got {seed!r}")
        canon = []
        for lab in labels:
            c = canonical_label(lab)
            if c is None:
                raise ValueError(f"SynthFACS: unknown label {lab!r}")
            canon.append(c)
        if not canon:
            raise ValueError("SynthFACS needs at least one label")
        self.size = int(size)
        self.seed = int(seed)
        self.labels: tuple[str, ...] = tuple(canon)
        self.oversample = int(oversample) if oversample else (3 if self.size < 160 else 2)
        self.variation = float(variation)
        self._variants = {
            lab: [
                frozenset(a for a in v.aus if a in SYNTH_AUS)
                for v in EMFACS_VARIANTS[lab]
                if lab == "neutral" or any(a in SYNTH_AUS for a in v.aus)
            ]
            for lab in set(self.labels)
        }

    def __repr__(self) -> str:
        return f"SynthFACS(size={self.size}, seed={self.seed}, labels={self.labels})"

    def __getitem__(self, index: int) -> SynthSample:
        return self.sample(index)

    # -- sampling ---------------------------------------------------------------------------

    def _rng(self, index: int) -> np.random.Generator:
        if int(index) < 0:
            raise IndexError(f"SynthFACS index must be >= 0, got {index!r}")
        return np.random.default_rng(np.random.SeedSequence([self.seed, int(index)]))

    def _aus(
        self, rng: np.random.Generator, label: str
    ) -> tuple[dict[int, float], dict[int, int], frozenset[int]]:
        variants = self._variants[label]
        variant = variants[int(rng.integers(len(variants)))]
        chosen = sorted(variant)
        keep = [au for au in chosen if rng.random() >= 0.15]
        need = math.ceil(0.6 * len(chosen))
        dropped = [au for au in chosen if au not in keep]
        rng.shuffle(dropped)
        while len(keep) < need:
            keep.append(dropped.pop())
        present = set(keep)
        if present & {16, 26}:
            present.add(25)
        strength = rng.uniform(0.45, 1.0)
        inten: dict[int, float] = {}
        for au in sorted(present):
            inten[au] = float(np.clip(strength * rng.uniform(0.75, 1.2), 0.35, 1.0))
        if 25 in inten and 26 in inten:
            inten[25] = max(inten[25], 0.8 * inten[26])

        def compatible(au: int) -> bool:
            return au not in inten and not any(
                au in ex and (ex - {au}) & set(inten) for ex in _EXCLUSIVE
            )

        if label not in ("surprise", "fear") and rng.random() < 0.05 and compatible(43):
            inten[43] = float(rng.uniform(0.6, 1.0))
        if rng.random() < 0.3:
            pool = [au for au in SYNTH_AUS if compatible(au)]
            au = int(pool[int(rng.integers(len(pool)))])
            inten[au] = float(rng.uniform(0.03, 0.15))
        side: dict[int, int] = {}
        if label == "contempt":
            s = int(rng.choice([-1, 1]))
            side = {12: s, 14: s}
        return inten, side, variant

    def _identity(self, rng: np.random.Generator) -> np.ndarray:
        s = NEUTRAL_SHAPE.copy()
        # Eye size around each eye's corner centre, eye spacing.
        eye_scale = rng.uniform(0.9, 1.1)
        spread = rng.uniform(-0.012, 0.012)
        for idx, sgn in ((list(range(36, 42)), -1), (list(range(42, 48)), 1)):
            c = s[[idx[0], idx[3]]].mean(0)
            s[idx] = c + (s[idx] - c) * eye_scale + np.array([sgn * spread, 0.0])
        # Brows: height, arch.
        s[17:27, 1] += rng.uniform(-0.012, 0.012)
        s[[18, 19, 20, 23, 24, 25], 1] -= rng.uniform(-0.006, 0.008)
        # Nose width.
        s[31:36, 0] *= rng.uniform(0.9, 1.15)
        # Mouth width, height, lip thickness.
        m = s[48:68]  # a view: edits land in s
        mc = m.mean(0)
        m[:, 0] = mc[0] + (m[:, 0] - mc[0]) * rng.uniform(0.95, 1.05)
        m[:, 1] += rng.uniform(-0.01, 0.01)
        thick = rng.uniform(0.85, 1.2)
        line_y = 0.5 * (s[62, 1] + s[66, 1])
        outer = list(range(49, 54)) + list(range(55, 60))
        s[outer, 1] = line_y + (s[outer, 1] - line_y) * thick
        # Chin length.
        chin = rng.uniform(-0.01, 0.01)
        for i, w in zip(range(4, 13), (0.2, 0.45, 0.7, 0.9, 1.0, 0.9, 0.7, 0.45, 0.2)):
            s[i, 1] += chin * w
        # Global proportions, then a little per-point noise (symmetric pairs move apart).
        s[:, 0] *= rng.uniform(0.94, 1.06)
        s[:, 1] *= rng.uniform(0.96, 1.04)
        s += rng.normal(0.0, 0.0015, size=s.shape)
        return s

    def _appearance(self, rng: np.random.Generator) -> Appearance:
        skin = _jitter_rgb(rng, _SKIN[int(rng.integers(len(_SKIN)))], 10)
        hair = _jitter_rgb(rng, _HAIR[int(rng.integers(len(_HAIR)))], 10)
        brow = tuple(int(0.55 * h + 0.45 * d) for h, d in zip(hair, (30, 24, 20)))
        lip = tuple(int(0.55 * s + 0.45 * r) for s, r in zip(skin, (176, 68, 78)))
        bg = tuple(int(v) for v in rng.integers(30, 226, size=3))
        bg2 = _jitter_rgb(rng, bg, 40)
        clothes = tuple(int(v) for v in rng.integers(20, 236, size=3))
        blur = float(rng.uniform(0.0, 0.5)) if rng.random() < 0.5 else 0.0
        return Appearance(
            skin=skin,
            hair=hair,
            brow=brow,  # type: ignore[arg-type]
            lip=lip,  # type: ignore[arg-type]
            iris=_IRIS[int(rng.integers(len(_IRIS)))],
            background=bg,  # type: ignore[arg-type]
            background2=bg2,
            clothes=clothes,  # type: ignore[arg-type]
            hairline=float(rng.uniform(-0.60, -0.50)),
            long_hair=bool(rng.random() < 0.4),
            gaze=(float(rng.uniform(-0.008, 0.008)), float(rng.uniform(-0.004, 0.004))),
            base_folds=float(rng.uniform(0.0, 0.5)),
            noise_sigma=float(rng.uniform(0.0, 5.0)),
            blur=blur,
            brightness=float(rng.uniform(*self._range(0.9, 1.1))),
            contrast=float(rng.uniform(*self._range(0.85, 1.15))),
        )

    def _pose(self, rng: np.random.Generator) -> Pose:
        n = self.size
        scale = n * rng.uniform(*self._range(0.50, 0.60))
        return Pose(
            cx=n / 2 + n * rng.uniform(*self._range(-0.04, 0.04)) - 0.5,
            cy=n / 2 + 0.07 * scale + n * rng.uniform(*self._range(-0.03, 0.03)) - 0.5,
            scale=float(scale),
            roll=float(np.deg2rad(rng.uniform(*self._range(-8.0, 8.0)))),
        )

    def _range(self, lo: float, hi: float) -> tuple[float, float]:
        """``(lo, hi)`` widened by :attr:`variation` about its centre (unchanged at 1)."""
        if self.variation == 1.0:
            return lo, hi
        c, h = 0.5 * (lo + hi), 0.5 * (hi - lo) * self.variation
        return c - h, c + h

    def sample(self, index: int, *, render: bool = True) -> SynthSample:
        """The sample at ``index`` (a pure function of ``(seed, index)``).

        ``render=False`` skips drawing (``image`` is then ``None``) — landmarks, AUs and
        label are identical and about 20x cheaper, for detector evaluation.
        """
        rng = self._rng(index)
        label = self.labels[int(index) % len(self.labels)]
        inten, side, variant = self._aus(rng, label)
        identity = self._identity(rng)
        shape = expression_shape(identity, inten, side=side)
        app = self._appearance(rng)
        pose = self._pose(rng)
        image = (
            render_face(shape, inten, app, pose, self.size, rng, oversample=self.oversample)
            if render
            else None
        )
        landmarks = pose.apply(shape).astype(np.float32)
        return SynthSample(
            image=image,
            landmarks=landmarks,
            au_intensity={int(k): float(v) for k, v in sorted(inten.items())},
            label=label,
            index=int(index),
            variant=variant,
        )

    def neutral_landmarks(self) -> np.ndarray:
        """The mean neutral face placed at this generator's mean pose, ``float32[68, 2]``."""
        n = self.size
        scale = n * 0.55
        pose = Pose(cx=n / 2 - 0.5, cy=n / 2 + 0.07 * scale - 0.5, scale=scale, roll=0.0)
        return pose.apply(NEUTRAL_SHAPE).astype(np.float32)
