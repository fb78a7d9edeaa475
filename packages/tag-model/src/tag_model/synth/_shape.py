"""The parametric iBUG-68 face of SynthFACS and how Action Units move its landmarks.

Coordinates here are *face units*: x to the image right, y down, 1.0 ≈ the jaw width,
origin near the middle of the nose. The renderer maps them to pixels with a similarity
transform (scale, roll, translation).

Every supported AU has a displacement field ``D_au`` (68×2, face units, at intensity 1) and the
expressive shape is linear in the intensities::

    shape = identity_shape + Σ_au  a_au · D_au          (a_au ∈ [0, 1])

except AU43 (eye closure), whose field is computed from the identity's own eye opening so
that intensity 1 closes the eye exactly. Displacements are written for the image-left half
of the face (iBUG points 0-8, 17-21, 31-32, 36-41, 48-50, 58-61, 67) plus the midline and
mirrored to the other half; ``side`` selects one half for unilateral actions (contempt).

Lip corners follow the lip midline: for every AU except the corner movers (12, 14, 15, 20)
the corners (48, 54, 60, 64) receive the mean vertical displacement of points 51 and 57, so
opening the mouth does not, by itself, change how high the corners sit relative to the lips.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "AU_FIELDS",
    "MIRROR",
    "NEUTRAL_SHAPE",
    "SYNTH_AUS",
    "expression_shape",
]

# iBUG-68 left/right correspondence (index -> mirrored index).
MIRROR = np.concatenate(
    [
        np.arange(16, -1, -1),  # jaw
        np.arange(26, 16, -1),  # brows
        [27, 28, 29, 30, 35, 34, 33, 32, 31],  # nose
        [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40],  # eyes
        [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55],  # outer lips
        [64, 63, 62, 61, 60, 67, 66, 65],  # inner lips
    ]
).astype(np.int64)
_MIDLINE = frozenset({8, 27, 28, 29, 30, 33, 51, 57, 62, 66})
_LEFT = frozenset(
    list(range(0, 8)) + list(range(17, 22)) + [31, 32] + list(range(36, 42))
    + [48, 49, 50, 58, 59, 60, 61, 67]
)  # fmt: skip


def _jaw() -> list[tuple[float, float]]:
    pts = []
    for t in np.linspace(0.0, 1.0, 17):
        phi = np.pi * t
        c, s = np.cos(phi), np.sin(phi)
        x = -0.5 * np.sign(c) * abs(c) ** 0.72
        y = -0.15 + 0.75 * s**1.15
        pts.append((float(x), float(y)))
    return pts


def _neutral() -> np.ndarray:
    left = {
        17: (-0.40, -0.285),
        18: (-0.32, -0.330),
        19: (-0.235, -0.345),
        20: (-0.155, -0.335),
        21: (-0.075, -0.310),
        31: (-0.085, 0.120),
        32: (-0.045, 0.135),
        36: (-0.310, -0.175),
        37: (-0.260, -0.205),
        38: (-0.190, -0.207),
        39: (-0.135, -0.172),
        40: (-0.190, -0.150),
        41: (-0.260, -0.151),
        48: (-0.190, 0.300),
        49: (-0.120, 0.268),
        50: (-0.050, 0.247),
        58: (-0.055, 0.362),
        59: (-0.120, 0.345),
        60: (-0.165, 0.300),
        61: (-0.050, 0.296),
        67: (-0.050, 0.301),
    }
    mid = {
        27: (0.0, -0.165),
        28: (0.0, -0.090),
        29: (0.0, -0.015),
        30: (0.0, 0.060),
        33: (0.0, 0.145),
        51: (0.0, 0.254),
        57: (0.0, 0.368),
        62: (0.0, 0.297),
        66: (0.0, 0.302),
    }
    shape = np.zeros((68, 2), dtype=np.float64)
    for i, p in enumerate(_jaw()):
        shape[i] = p
    shape[8, 0] = 0.0
    for i, p in {**left, **mid}.items():
        shape[i] = p
    for i in left:
        shape[MIRROR[i]] = (-left[i][0], left[i][1])
    return shape


NEUTRAL_SHAPE: np.ndarray = _neutral()
"""The mean neutral face, ``float64[68, 2]`` in face units."""


def _field(left: dict[int, tuple[float, float]], corners_follow: bool = True) -> np.ndarray:
    """Displacement field from image-left/midline entries, mirrored to the right half."""
    f = np.zeros((68, 2), dtype=np.float64)
    for i, (dx, dy) in left.items():
        if i not in _LEFT and i not in _MIDLINE:
            raise ValueError(f"field entry {i} is neither image-left nor midline")
        f[i] = (dx, dy)
        if i in _LEFT:
            f[MIRROR[i]] = (-dx, dy)
    if corners_follow:
        follow = 0.5 * (f[51, 1] + f[57, 1])
        for i in (48, 54, 60, 64):
            f[i, 1] += follow
    return f


# Jaw weights for the jaw drop, from the ear (0) to the chin (8).
_JAW_W = (0.0, 0.03, 0.10, 0.22, 0.40, 0.60, 0.80, 0.93, 1.0)

AU_FIELDS: dict[int, np.ndarray] = {
    # AU1 inner brow raiser: inner brow ends up, fading outward.
    1: _field({21: (0, -0.075), 20: (0, -0.050), 19: (0, -0.025), 18: (0, -0.010)}),
    # AU2 outer brow raiser: outer brow ends up, fading inward.
    2: _field({17: (0, -0.070), 18: (0, -0.060), 19: (0, -0.035), 20: (0, -0.012)}),
    # AU4 brow lowerer: brows down, inner ends also drawn toward the midline.
    4: _field(
        {
            17: (0, 0.020),
            18: (0.010, 0.030),
            19: (0.015, 0.040),
            20: (0.025, 0.045),
            21: (0.032, 0.045),
        }
    ),
    # AU5 upper lid raiser.
    5: _field({37: (0, -0.030), 38: (0, -0.030)}),
    # AU6 cheek raiser: lower lid pushed up a little, upper cheek contour lifted and bulged.
    6: _field(
        {
            40: (0, -0.012),
            41: (0, -0.012),
            1: (0.010, -0.030),
            2: (0.015, -0.036),
            3: (0.012, -0.026),
        }
    ),
    # AU7 lid tightener: lower lid raised and straightened, upper lid barely lowered.
    7: _field({40: (0, -0.024), 41: (0, -0.022), 37: (0, 0.004), 38: (0, 0.004)}),
    # AU9 nose wrinkler: nostril wings and subnasale lifted, upper lip lifted slightly,
    # inner brows pulled down a little.
    9: _field(
        {
            31: (0.004, -0.030),
            32: (0, -0.032),
            33: (0, -0.032),
            29: (0, -0.012),
            49: (0, -0.012),
            50: (0, -0.018),
            51: (0, -0.018),
            61: (0, -0.006),
            62: (0, -0.006),
            21: (0, 0.015),
            20: (0, 0.008),
        }
    ),
    # AU10 upper lip raiser.
    10: _field(
        {
            49: (0, -0.030),
            50: (0, -0.040),
            51: (0, -0.036),
            61: (0, -0.012),
            62: (0, -0.012),
            31: (0, -0.006),
            32: (0, -0.006),
            33: (0, -0.006),
        }
    ),
    # AU12 lip corner puller: corners up and out, neighbours follow.
    12: _field(
        {
            48: (-0.035, -0.060),
            60: (-0.030, -0.055),
            49: (-0.012, -0.020),
            59: (-0.018, -0.032),
            61: (-0.004, -0.008),
            67: (-0.004, -0.010),
        },
        corners_follow=False,
    ),
    # AU14 dimpler: corners tightened inward.
    14: _field({48: (0.014, -0.006), 60: (0.012, -0.005)}, corners_follow=False),
    # AU15 lip corner depressor: corners pulled down.
    15: _field(
        {
            48: (0.008, 0.044),
            60: (0.007, 0.040),
            49: (0.002, 0.012),
            59: (0.004, 0.022),
            61: (0, 0.004),
            67: (0, 0.004),
        },
        corners_follow=False,
    ),
    # AU16 lower lip depressor: lower lip pulled down.
    16: _field({57: (0, 0.040), 58: (0, 0.036), 59: (0, 0.018), 66: (0, 0.035), 67: (0, 0.030)}),
    # AU17 chin raiser: chin boss and lower lip pushed up.
    17: _field(
        {
            57: (0, -0.035),
            58: (0, -0.030),
            59: (0, -0.016),
            66: (0, -0.006),
            67: (0, -0.005),
            61: (0, -0.004),
            62: (0, -0.004),
            51: (0, -0.004),
            8: (0, -0.060),
            7: (0, -0.044),
            6: (0, -0.020),
            5: (0, -0.007),
        }
    ),
    # AU20 lip stretcher: corners pulled sideways, lips flattened.
    20: _field(
        {
            48: (-0.060, 0.003),
            60: (-0.055, 0.003),
            49: (-0.025, 0.002),
            59: (-0.025, 0.0),
            50: (-0.008, 0.005),
            58: (-0.008, -0.006),
            51: (0, 0.005),
            57: (0, -0.006),
        },
        corners_follow=False,
    ),
    # AU23 lip tightener: lips narrowed and thinned.
    23: _field(
        {
            48: (0.012, 0),
            60: (0.010, 0),
            49: (0, 0.010),
            50: (0, 0.012),
            51: (0, 0.012),
            58: (0, -0.012),
            57: (0, -0.012),
            59: (0, -0.010),
        },
        corners_follow=False,
    ),
    # AU24 lip pressor: lips pressed together and thinned, slightly widened.
    24: _field(
        {
            48: (-0.008, 0),
            60: (-0.008, 0),
            49: (0, 0.008),
            50: (0, 0.010),
            51: (0, 0.010),
            58: (0, -0.010),
            57: (0, -0.010),
            59: (0, -0.008),
        },
        corners_follow=False,
    ),
    # AU25 lips part: lower lip down, upper lip barely up (jaw still).
    25: _field(
        {
            57: (0, 0.050),
            58: (0, 0.047),
            59: (0, 0.030),
            66: (0, 0.070),
            67: (0, 0.062),
            62: (0, -0.010),
            61: (0, -0.008),
        }
    ),
    # AU26 jaw drop: jaw contour and lower lip move down with the mandible.
    26: _field(
        {
            **{i: (0.0, 0.13 * w) for i, w in enumerate(_JAW_W)},
            57: (0, 0.110),
            58: (0, 0.105),
            59: (0, 0.085),
            66: (0, 0.100),
            67: (0, 0.094),
        }
    ),
}
"""AU -> displacement field ``float64[68, 2]`` at intensity 1 (AU43 is computed per face)."""

SYNTH_AUS: tuple[int, ...] = tuple(sorted([*AU_FIELDS, 43]))
"""AUs SynthFACS can render."""

_UPPER_LID = (37, 38, 43, 44)
_LOWER_LID = {37: 41, 38: 40, 43: 47, 44: 46}


def expression_shape(
    identity: np.ndarray,
    intensity: dict[int, float],
    *,
    side: dict[int, int] | None = None,
) -> np.ndarray:
    """Move the landmarks of ``identity`` (``[68, 2]`` face units) by the AU ``intensity``.

    ``side`` maps an AU to ``-1`` (image-left half only), ``+1`` (image-right half only) or
    ``0`` (both, the default). Returns a new ``float64[68, 2]`` array.
    """
    shape = identity.astype(np.float64, copy=True)
    side = side or {}
    left_mask = np.zeros(68, dtype=bool)
    left_mask[sorted(_LEFT)] = True
    right_mask = np.zeros(68, dtype=bool)
    right_mask[MIRROR[sorted(_LEFT)]] = True
    for au, a in intensity.items():
        if a == 0.0 or au == 43:
            continue
        field = AU_FIELDS.get(au)
        if field is None:
            raise ValueError(f"SynthFACS cannot render AU{au}; supported: {SYNTH_AUS}")
        f = field * float(a)
        s = side.get(au, 0)
        if s < 0:
            f = f * (~right_mask)[:, None]
        elif s > 0:
            f = f * (~left_mask)[:, None]
        shape += f
    a43 = float(intensity.get(43, 0.0))
    if a43 > 0.0:
        for up in _UPPER_LID:
            low = _LOWER_LID[up]
            gap = shape[low, 1] - shape[up, 1]
            shape[up, 1] += a43 * max(gap - 0.004, 0.0)
    return shape
