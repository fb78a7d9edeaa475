"""A geometric AU detector on iBUG-68 landmarks.

**Frame.** Landmarks are first put in an eye-aligned frame: the origin is the midpoint of
the two eye-corner centres ``E_l = (p36 + p39)/2`` and ``E_r = (p42 + p45)/2``, the x axis
runs from ``E_l`` to ``E_r`` (this undoes head roll), and every coordinate is divided by the
inter-ocular distance ``IOD = |E_r - E_l|``. In that frame ``y`` points down the face and
``y = 0`` is the eye line. Write ``q_i = (x_i, y_i)`` for point ``i`` there, and
``V = y_30`` (eye line to nose tip) for the vertical scale used below the eyes, so that face
elongation cancels. Both sides of the face are averaged (``⟨a, b⟩`` = mean).

**Measurements** (each minus the same quantity on the neutral template, written ``Δ``):

======  ==========================================================================  ========
AU      normalised displacement ``d``                                               ``d_max``
======  ==========================================================================  ========
AU1     ``Δ(-⟨y21,y22⟩) + 0.70·g``  (inner-brow rise; ``g = -Δ(x22 - x21)`` is the
        brow-gap closing that AU4 causes, and AU4 lowers the inner brow by 0.70·g)     0.169
AU2     ``Δ(-⟨y17,y26⟩) + 0.31·g``  (outer-brow rise, same AU4 correction)           0.157
AU4     ``g = -Δ(x22 - x21)``  (brows drawn together)                                0.144
AU5     ``Δ(-⟨y37,y38,y43,y44⟩ + ⟨y36,y39,y42,y45⟩)``  (upper lid above the corners)   0.067
AU6     ``Δ(-⟨y1,y2,y14,y15⟩) + 0.065·Δ(y8 - y30)``  (upper-cheek contour lifted;
        the second term undoes the jaw drop)                                          0.074
AU7     ``Δ(-⟨y40,y41,y46,y47⟩ + ⟨corners⟩) - 0.36·c6``  (lower lid raised; ``c6`` is
        the AU6 measurement, whose cheek push lifts the lower lid too)                 0.052
AU9     ``-Δ((⟨y31..y35⟩) / V)``  (nostrils and subnasale lifted, relative to V)        0.134
AU12    ``Δ(m - ⟨y48,y54⟩)``, ``m = (y51 + y57)/2``  (lip corners above the lip midline)  0.135
AU15    ``-Δ(m - ⟨y48,y54⟩)``  (lip corners below the lip midline)                    0.099
AU17    ``-Δ((y8 - y30) / V) - Δ((y57 - y30) / V)``  (chin boss and lower lip pushed up)  0.34
AU20    ``Δ(x54 - x48) - 1.17·max(c12, 0) + 0.36·max(-c12, 0)``  (mouth widened,
        minus the widening that AU12 brings and the narrowing of AU15)                 0.27
AU25    ``Δ(⟨y65,y66,y67⟩ - ⟨y61,y62,y63⟩)``  (inner-lip gap)                          0.18
AU26    ``Δ((y8 - y30) / V)``  (chin drop relative to the nose)                        0.56
AU43    ``-(AU5 measurement)``  (upper lid lowered onto the lower lid)                  0.125
======  ==========================================================================  ========

**Mapping to a probability.** ``d_max`` is the displacement of that AU at its strongest
(FACS "E"); ``r = d / d_max`` is a 0-1 intensity estimate and the probability is the
logistic ``p = 1 / (1 + exp(-(r - midpoint) / softness))`` with ``midpoint = 0.22`` and
``softness = 0.05`` by default (so a "trace" action, FACS "A", scores below 0.5).

The ``d_max`` values and the neutral template are those of SynthFACS's parametric face
(:mod:`tag_model.synth`), whose displacements were set from the FACS manual's descriptions.
On real faces expressions differ from person to person: pass the person's own neutral
frame as ``neutral=`` where you have one, and check the per-AU F1 before trusting an AU.
The AUs this detector claims (:attr:`GeometricAUDetector.supported_aus`) are those that
reach F1 >= 0.8 on SynthFACS (see ``tests/model/test_detectors.py``); AU10 and AU14 are
measured by nothing robust enough and are not claimed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["GEOMETRIC_D_MAX", "GeometricAUDetector", "geometric_measurements"]

GEOMETRIC_D_MAX: dict[int, float] = {
    1: 0.169,
    2: 0.157,
    4: 0.144,
    5: 0.067,
    6: 0.141,
    7: 0.052,
    9: 0.134,
    12: 0.135,
    15: 0.099,
    17: 0.332,
    20: 0.120,
    25: 0.165,
    26: 0.557,
    43: 0.116,
}
"""AU -> normalised displacement at full intensity (see the module table)."""


def _neutral_template() -> np.ndarray:
    from tag_model.synth._shape import NEUTRAL_SHAPE

    return NEUTRAL_SHAPE.astype(np.float64)


@functools.lru_cache(maxsize=1)
def _template_raw() -> dict[str, float]:
    """:func:`_raw` of the built-in neutral template, computed once (read-only)."""
    return {k: float(v[0]) for k, v in _raw(_neutral_template()[None]).items()}


def _raw(lm: np.ndarray) -> dict[str, np.ndarray]:
    """Raw (not yet template-subtracted) quantities for landmarks ``[N, 68, 2]``."""
    el = 0.5 * (lm[:, 36] + lm[:, 39])
    er = 0.5 * (lm[:, 42] + lm[:, 45])
    axis = er - el
    iod = np.linalg.norm(axis, axis=-1)
    safe = np.where(iod > 1e-9, iod, 1.0)
    ex = axis / safe[:, None]
    ey = np.stack([-ex[:, 1], ex[:, 0]], axis=-1)
    rel = lm - (0.5 * (el + er))[:, None, :]
    x = np.einsum("npk,nk->np", rel, ex) / safe[:, None]
    y = np.einsum("npk,nk->np", rel, ey) / safe[:, None]

    def my(*idx: int) -> np.ndarray:
        return y[:, list(idx)].mean(axis=1)

    v = y[:, 30]
    v_safe = np.where(np.abs(v) > 1e-6, v, 1.0)
    corners = my(36, 39, 42, 45)
    jaw_w = x[:, 16] - x[:, 0]
    return {
        "iod": iod,
        "v": v,
        "brow_gap": x[:, 22] - x[:, 21],
        "inner_brow": -my(21, 22),
        "outer_brow": -my(17, 26),
        "upper_lid": -my(37, 38, 43, 44) + corners,
        "lower_lid": -my(40, 41, 46, 47) + corners,
        "cheek": -my(1, 2, 14, 15) / v_safe,
        "nose": my(31, 32, 33, 34, 35) / v_safe,
        "corner": 0.5 * (y[:, 51] + y[:, 57]) - my(48, 54),
        "width": (x[:, 54] - x[:, 48]) / np.where(np.abs(jaw_w) > 1e-6, jaw_w, 1.0),
        "chin": (y[:, 8] - y[:, 30]) / v_safe,
        "lower_lip": (y[:, 57] - y[:, 30]) / v_safe,
        "lip_gap": my(65, 66, 67) - my(61, 62, 63),
    }


def geometric_measurements(
    landmarks: np.ndarray, neutral: np.ndarray | None = None
) -> dict[int, np.ndarray]:
    """Normalised displacements ``d`` per AU (module table) for ``landmarks[N, 68, 2]``.

    ``neutral`` (``[68, 2]``, any scale/pose) replaces the built-in neutral template.
    Returns AU -> ``float64[N]`` (NaN where the face is degenerate: zero IOD or nose on the
    eye line, or non-finite input).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be [68, 2] or [N, 68, 2], got shape {lm.shape}")
    if neutral is None:
        t = _template_raw()
    else:
        ref = np.asarray(neutral, dtype=np.float64)
        if ref.shape != (68, 2):
            raise ValueError(f"neutral landmarks must be [68, 2], got shape {ref.shape}")
        t = {k: float(v[0]) for k, v in _raw(ref[None]).items()}
    r = _raw(lm)
    d = {k: r[k] - t[k] for k in r if k not in ("iod", "v")}
    g = -d["brow_gap"]
    c6 = d["cheek"] + 0.065 * d["chin"]
    c12 = d["corner"]
    out: dict[int, np.ndarray] = {
        1: d["inner_brow"] + 0.70 * g,
        2: d["outer_brow"] + 0.31 * g,
        4: g,
        5: d["upper_lid"],
        6: c6,
        7: d["lower_lid"] - 0.19 * c6,
        9: -d["nose"],
        12: c12,
        15: -c12,
        17: -d["chin"] - 0.5 * d["lower_lip"],
        20: d["width"] - 0.52 * np.maximum(c12, 0.0) + 0.16 * np.maximum(-c12, 0.0),
        25: d["lip_gap"],
        26: d["chin"],
        43: -d["upper_lid"],
    }
    bad = (
        ~np.isfinite(lm).all(axis=(1, 2))
        | (r["iod"] <= 1e-6)
        | (np.abs(r["v"]) <= 1e-3)
        | (r["v"] < 0)
    )
    for au in out:
        out[au] = np.where(bad, np.nan, out[au])
    return out


class GeometricAUDetector:
    """AU probabilities from 68 landmarks by normalised displacement (see the module doc).

    Args:
        neutral: optional ``[68, 2]`` neutral landmarks of the same person (any pose/scale);
            defaults to the built-in template.
        midpoint: intensity (0-1) at which the probability is 0.5, a float or a per-AU dict.
        softness: logistic scale in intensity units, a float or a per-AU dict.
        aus: subset of AUs to report (default: all supported).

    ``predict(landmarks=...)`` returns AU -> probability in [0, 1]; with only an image it
    calls :func:`tag_model.faces.dlib_landmarks` (optional extra) and returns ``{}`` when no
    face is found. Degenerate or non-finite landmarks also give ``{}``.
    """

    SUPPORTED: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 12, 15, 17, 20, 25, 26, 43)

    def __init__(
        self,
        neutral: np.ndarray | None = None,
        *,
        midpoint: float | Mapping[int, float] = 0.22,
        softness: float | Mapping[int, float] = 0.05,
        aus: Sequence[int] | None = None,
    ) -> None:
        self.neutral = None if neutral is None else np.asarray(neutral, dtype=np.float64)
        if self.neutral is not None and self.neutral.shape != (68, 2):
            raise ValueError(f"neutral landmarks must be [68, 2], got {self.neutral.shape}")
        chosen = tuple(self.SUPPORTED if aus is None else (int(a) for a in aus))
        unknown = [a for a in chosen if a not in self.SUPPORTED]
        if unknown:
            raise ValueError(f"GeometricAUDetector does not support AUs {unknown}")
        self.supported_aus: tuple[int, ...] = chosen
        self._mid = np.array([_per_au(midpoint, a, 0.22) for a in chosen], dtype=np.float64)
        self._soft = np.array([_per_au(softness, a, 0.05) for a in chosen], dtype=np.float64)
        if (self._soft <= 0).any():
            raise ValueError("softness must be > 0")

    def __repr__(self) -> str:
        return f"GeometricAUDetector(supported_aus={self.supported_aus})"

    def intensity_batch(self, landmarks: np.ndarray) -> np.ndarray:
        """Intensity estimates ``r = d / d_max`` (unclipped), ``float64[N, A]``, NaN if bad."""
        m = geometric_measurements(landmarks, self.neutral)
        return np.stack([m[a] / GEOMETRIC_D_MAX[a] for a in self.supported_aus], axis=-1)

    def predict_batch(self, landmarks: np.ndarray) -> np.ndarray:
        """Probabilities ``float64[N, A]`` (column ``j`` is ``supported_aus[j]``); 0 if bad."""
        p = self._probability(self.intensity_batch(landmarks))
        return np.where(np.isfinite(p), p, 0.0)

    def _probability(self, r: np.ndarray) -> np.ndarray:
        """The logistic of intensities ``r[..., A]`` (NaN stays NaN)."""
        z = np.clip((r - self._mid) / self._soft, -60.0, 60.0)
        return 1.0 / (1.0 + np.exp(-z))

    def predict(self, image: Any = None, landmarks: np.ndarray | None = None) -> dict[int, float]:
        """AU -> probability for one face (``landmarks[68, 2]`` in any pixel frame)."""
        if landmarks is None:
            if image is None:
                raise ValueError("GeometricAUDetector.predict needs landmarks or an image")
            from tag_model.faces import dlib_landmarks

            landmarks = dlib_landmarks(image)
            if landmarks is None:
                return {}
        lm = np.asarray(landmarks, dtype=np.float64)
        if lm.shape != (68, 2):
            raise ValueError(f"landmarks must be [68, 2], got shape {lm.shape}")
        return self.predict_dicts(lm[None])[0]

    def predict_dicts(self, landmarks: np.ndarray) -> list[dict[int, float]]:
        """:meth:`predict` for ``landmarks[N, 68, 2]`` in one vectorised pass: per face,
        AU -> probability, ``{}`` for a degenerate face (every AU NaN). Each face's floats
        are the same whatever else the batch holds."""
        r = self.intensity_batch(np.asarray(landmarks, dtype=np.float64))
        probs = self._probability(r)
        return [
            {a: float(p) for a, p in zip(self.supported_aus, pk)} if np.isfinite(rk).all() else {}
            for rk, pk in zip(r, probs)
        ]


def _per_au(value: float | Mapping[int, float], au: int, default: float) -> float:
    if isinstance(value, Mapping):
        return float(value.get(au, default))
    return float(value)
