"""Drawing a SynthFACS face with PIL from its landmarks, AU intensities and appearance.

Everything is drawn on a canvas ``oversample`` times larger than the output and box-reduced,
which anti-aliases the edges while keeping the geometry exact: a canvas point ``u`` lands at
``(u + 0.5) / k - 0.5`` in output pixel-index coordinates (pixel centres at integers, the
dlib / OpenCV convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["Appearance", "Pose", "render_face"]

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Pose:
    """Similarity transform from face units to output pixels (before oversampling)."""

    cx: float
    cy: float
    scale: float  # pixels per face unit
    roll: float  # radians, positive = clockwise on screen

    def apply(self, pts: np.ndarray) -> np.ndarray:
        """Map ``[..., 2]`` face-unit points to output pixel-index coordinates."""
        c, s = np.cos(self.roll), np.sin(self.roll)
        x, y = pts[..., 0], pts[..., 1]
        return np.stack(
            [self.cx + self.scale * (c * x - s * y), self.cy + self.scale * (s * x + c * y)],
            axis=-1,
        )


@dataclass(frozen=True)
class Appearance:
    """Colours and style of one synthetic person and shot."""

    skin: RGB
    hair: RGB
    brow: RGB
    lip: RGB
    iris: RGB
    background: RGB
    background2: RGB
    clothes: RGB
    hairline: float  # y of the hairline in face units (about -0.5)
    long_hair: bool
    gaze: tuple[float, float]  # iris offset in face units
    base_folds: float  # 0..1 visibility of age lines at rest
    noise_sigma: float  # Gaussian pixel noise, 0..255 scale
    blur: float  # Gaussian blur radius in output pixels
    brightness: float  # multiplicative
    contrast: float  # multiplicative around the mean


def _catmull_rom(pts: np.ndarray, closed: bool, n: int = 6) -> np.ndarray:
    """Smooth a polyline through ``pts`` ``[P, 2]`` (uniform Catmull-Rom)."""
    p = np.asarray(pts, dtype=np.float64)
    if len(p) < 3:
        return p
    ext = np.vstack([p[-1:], p, p[:2]]) if closed else np.vstack([p[:1], p, p[-1:]])
    segs = len(p) if closed else len(p) - 1
    t = np.linspace(0.0, 1.0, n, endpoint=False)[:, None]
    out = []
    for i in range(segs):
        p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
        out.append(
            0.5
            * (
                2 * p1
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
            )
        )
    if not closed:
        out.append(p[-1:])
    return np.vstack(out)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=-1)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 12):
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=-1)


def _o(x: float, y: float) -> np.ndarray:
    """A 2-vector offset in face units."""
    return np.array([x, y], dtype=np.float64)


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(round(a[i] * (1 - t) + b[i] * t) for i in range(3))  # type: ignore[return-value]


def _shade(c: RGB, f: float) -> RGB:
    return tuple(int(max(0, min(255, round(v * f)))) for v in c)  # type: ignore[return-value]


class _Canvas:
    """Draw in face units on an oversampled RGBA canvas."""

    def __init__(self, size: int, k: int, pose: Pose, bg: Image.Image) -> None:
        self.k = k
        self.pose = pose
        self.img = bg
        self.draw = ImageDraw.Draw(self.img, "RGBA")

    def px(self, pts: np.ndarray) -> list[tuple[float, float]]:
        q = (self.pose.apply(np.asarray(pts, dtype=np.float64)) + 0.5) * self.k - 0.5
        return [(float(x), float(y)) for x, y in q.reshape(-1, 2)]

    def w(self, width_face_units: float) -> int:
        return max(1, round(width_face_units * self.pose.scale * self.k))

    def poly(self, pts: np.ndarray, fill: tuple[int, ...]) -> None:
        self.draw.polygon(self.px(pts), fill=fill)

    def line(self, pts: np.ndarray, fill: tuple[int, ...], width: float) -> None:
        self.draw.line(self.px(pts), fill=fill, width=self.w(width), joint="curve")


def _band(pts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Polygon of a stroke along ``pts`` with per-point ``widths`` (face units)."""
    d = np.gradient(pts, axis=0)
    n = np.stack([-d[:, 1], d[:, 0]], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
    upper = pts + n * widths[:, None] / 2
    lower = pts - n * widths[:, None] / 2
    return np.vstack([upper, lower[::-1]])


def render_face(
    shape: np.ndarray,
    intensity: dict[int, float],
    app: Appearance,
    pose: Pose,
    size: int,
    rng: np.random.Generator,
    *,
    oversample: int = 3,
) -> Image.Image:
    """Render the face whose landmarks are ``shape`` (``[68, 2]`` face units).

    ``intensity`` drives the appearance cues that landmarks cannot show (wrinkles, folds,
    cheek bulge); ``rng`` draws the pixel noise. Returns an RGB image ``size × size``.
    """
    k = oversample
    S = size * k
    a = {au: float(v) for au, v in intensity.items()}

    def A(au: int) -> float:
        return a.get(au, 0.0)

    # Background: vertical gradient between two tones.
    t = np.linspace(0.0, 1.0, S, dtype=np.float32)[:, None, None]
    bg = (1 - t) * np.array(app.background, np.float32) + t * np.array(app.background2, np.float32)
    bg = np.broadcast_to(bg, (S, S, 3)).astype(np.uint8)
    cv = _Canvas(size, k, pose, Image.fromarray(bg, "RGB"))
    sh = shape
    skin = app.skin
    dark_skin = _shade(skin, 0.80)
    fold = (*_shade(skin, 0.62), 0)

    def fold_col(alpha: float) -> tuple[int, int, int, int]:
        return (*fold[:3], int(max(0.0, min(1.0, alpha)) * 200))

    # Shoulders, neck, hair behind the head, ears.
    cv.poly(
        np.array([[-1.4, 1.6], [-1.0, 0.92], [-0.3, 0.78], [0.3, 0.78], [1.0, 0.92], [1.4, 1.6]]),
        (*app.clothes, 255),
    )
    cv.poly(
        np.array([[-0.24, 0.30], [0.24, 0.30], [0.27, 0.95], [0.0, 1.0], [-0.27, 0.95]]),
        (*dark_skin, 255),
    )
    if app.long_hair:
        cv.poly(
            np.vstack(
                [_arc(0, -0.2, 0.66, 0.66, np.pi, 2 * np.pi, 24), [[0.66, 0.75], [-0.66, 0.75]]]
            ),
            (*app.hair, 255),
        )
    else:
        cv.poly(_ellipse(0.0, -0.24, 0.60, 0.58), (*app.hair, 255))
    for sgn in (-1, 1):
        ear = _ellipse(sgn * 0.50, -0.06, 0.07, 0.13, 24)
        cv.poly(ear, (*dark_skin, 255))

    # Face: jaw contour closed by a forehead arc.
    jaw = sh[0:17]
    x0 = jaw[0, 0]
    x1, y1 = jaw[16]
    cx, top = 0.5 * (x0 + x1), -0.74
    rx = 0.5 * (x1 - x0)
    forehead = _arc(cx, y1, rx, y1 - top, 0.0, -np.pi, 28)[1:-1]
    face = np.vstack([jaw, forehead])
    cv.poly(face, (*skin, 255))

    # Hair fringe over the top of the forehead.
    hl = app.hairline
    fringe = np.vstack(
        [
            _arc(0, -0.24, 0.61, 0.58, np.pi * 1.02, np.pi * 1.98, 30),
            _arc(0, hl + 0.28, 0.50, 0.30, -0.05, -np.pi + 0.05, 30),
        ]
    )
    cv.poly(fringe, (*app.hair, 255))

    # Cheeks: blush patches, raised by AU6 / AU12.
    lift = 0.05 * A(6) + 0.025 * A(12)
    blush = (*_mix(skin, app.lip, 0.35), int(40 + 70 * max(A(6), 0.7 * A(12))))
    for sgn in (-1, 1):
        cv.poly(_ellipse(sgn * 0.27, 0.06 - lift, 0.10 + 0.02 * A(6), 0.065), blush)

    # Wrinkles and folds (alpha ∝ intensity).
    base = app.base_folds
    # AU1: central forehead lines; AU2: lateral forehead lines.
    for j, y in enumerate((-0.44, -0.50)):
        if A(1) > 0:
            cv.line(
                _arc(0, y + 0.12, 0.16, 0.10, -np.pi * 0.78, -np.pi * 0.22, 10),
                fold_col(A(1) * (1 - 0.2 * j)),
                0.010,
            )
        if A(2) > 0:
            for sgn in (-1, 1):
                xs = np.linspace(0.12, 0.36, 8)
                cv.line(
                    np.stack([sgn * xs, y + 0.02 + 0.10 * (xs - 0.24) ** 2], -1),
                    fold_col(A(2) * (1 - 0.2 * j)),
                    0.009,
                )
    # AU4: vertical furrows between the brows.
    if A(4) > 0:
        for sgn in (-1, 1):
            cv.line(
                np.array([[sgn * 0.030, -0.30], [sgn * 0.022, -0.21]]), fold_col(1.2 * A(4)), 0.011
            )
    # AU9: wrinkles across the nose bridge.
    if A(9) > 0:
        for y in (-0.10, -0.07, -0.04):
            cv.line(
                np.array([[-0.05, y], [0.0, y - 0.008], [0.05, y]]), fold_col(1.1 * A(9)), 0.008
            )
    # Nasolabial folds: from the nose wing to beyond the lip corner.
    nl = max(base * 0.35, A(12), A(10) * 0.9, A(9) * 0.6, A(6) * 0.5, A(20) * 0.3)
    for i_wing, i_corner in ((31, 48), (35, 54)):
        wing, corner = sh[i_wing], sh[i_corner]
        sgn = np.sign(corner[0]) or 1.0
        p0 = wing + np.array([sgn * 0.035, -0.01])
        p2 = corner + np.array([sgn * 0.045, 0.025])
        p1 = 0.5 * (p0 + p2) + np.array([sgn * 0.035, 0.0])
        cv.line(_catmull_rom(np.array([p0, p1, p2]), closed=False, n=5), fold_col(nl), 0.011)
    # AU6: crow's feet and the bulge under the lower lid.
    if A(6) > 0:
        for i_out, sgn in ((36, -1), (45, 1)):
            o = sh[i_out]
            for ang in (-0.45, 0.0, 0.45):
                d = np.array([sgn * np.cos(ang), np.sin(ang)])
                cv.line(np.array([o + d * 0.03, o + d * 0.075]), fold_col(A(6)), 0.007)
        for lo in ((40, 41), (46, 47)):
            m = sh[list(lo)].mean(0)
            cv.line(
                _arc(m[0], m[1] + 0.015, 0.075, 0.03, np.pi * 0.15, np.pi * 0.85, 10),
                fold_col(0.9 * A(6)),
                0.008,
            )
    # AU14 dimples, AU15 marionette lines, AU20 stretch lines.
    for i_corner in (48, 54):
        c = sh[i_corner]
        sgn = np.sign(c[0]) or 1.0
        if A(14) > 0:
            cv.line(
                _arc(c[0] + sgn * 0.03, c[1], 0.012, 0.03, -np.pi / 2, np.pi / 2, 6)
                if sgn > 0
                else _arc(c[0] + sgn * 0.03, c[1], 0.012, 0.03, np.pi / 2, 1.5 * np.pi, 6),
                fold_col(A(14)),
                0.008,
            )
        if A(15) > 0:
            cv.line(
                np.array([c + _o(sgn * 0.01, 0.02), c + _o(sgn * 0.03, 0.10)]),
                fold_col(A(15)),
                0.009,
            )
        if A(20) > 0:
            cv.line(
                np.array([c + _o(sgn * 0.015, -0.01), c + _o(sgn * 0.06, 0.0)]),
                fold_col(0.8 * A(20)),
                0.007,
            )
    # AU17: chin boss and dimpling.
    if A(17) > 0:
        chin = sh[8]
        cv.line(
            _arc(chin[0], chin[1] - 0.09, 0.09, 0.05, np.pi * 1.1, np.pi * 1.9, 10),
            fold_col(A(17)),
            0.009,
        )
        for dx, dy in ((-0.03, -0.05), (0.02, -0.06), (0.0, -0.035), (0.035, -0.04)):
            cv.poly(_ellipse(chin[0] + dx, chin[1] + dy, 0.007, 0.005, 8), fold_col(0.8 * A(17)))

    # Eyes: sclera clipped iris, lids, crease.
    for idx in ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47)):
        eye = sh[list(idx)]
        outline = _catmull_rom(eye, closed=True, n=5)
        opening = eye[[4, 5], 1].mean() - eye[[1, 2], 1].mean()
        corners = eye[[0, 3]].mean(0)
        # Crease above the upper lid.
        upper = _catmull_rom(eye[[0, 1, 2, 3]], closed=False, n=5)
        crease = upper + np.array([0, -0.028 - 0.3 * max(opening - 0.055, 0)])
        cv.line(crease, fold_col(0.55), 0.007)
        if opening > 0.012:
            mask = Image.new("L", cv.img.size, 0)
            ImageDraw.Draw(mask).polygon(cv.px(outline), fill=255)
            layer = Image.new("RGB", cv.img.size, (240, 238, 232))
            ld = ImageDraw.Draw(layer)
            c = corners + np.array(app.gaze) + np.array([0.0, 0.002])
            r = 0.034
            ld.polygon(cv.px(_ellipse(c[0], c[1], r, r, 28)), fill=app.iris)
            ld.polygon(cv.px(_ellipse(c[0], c[1], r * 0.45, r * 0.45, 20)), fill=(15, 12, 12))
            ld.polygon(
                cv.px(_ellipse(c[0] + 0.01, c[1] - 0.01, r * 0.18, r * 0.18, 10)),
                fill=(250, 250, 250),
            )
            cv.img.paste(layer, (0, 0), mask)
            cv.draw = ImageDraw.Draw(cv.img, "RGBA")
        # Upper lid (lash line) and lower lid.
        cv.line(upper, (*_shade(app.brow, 0.7), 255), 0.013)
        lower = _catmull_rom(eye[[3, 4, 5, 0]], closed=False, n=5)
        cv.line(lower, (*_shade(skin, 0.55), 220), 0.006)

    # Brows: tapered bands along 17-21 / 22-26.
    for idx in ((17, 18, 19, 20, 21), (22, 23, 24, 25, 26)):
        b = sh[list(idx)]
        pts = _catmull_rom(b, closed=False, n=5)
        frac = np.linspace(0, 1, len(pts))
        if idx[0] == 22:
            frac = frac[::-1]  # keep the thick end medial
        widths = 0.018 + 0.020 * frac
        cv.poly(_band(pts, widths), (*app.brow, 255))

    # Nose: side shading, wings, nostrils.
    shade = (*_shade(skin, 0.75), 120)
    for sgn in (-1, 1):
        cv.line(np.array([[sgn * 0.035, sh[28, 1]], [sgn * 0.045, sh[30, 1]]]), shade, 0.010)
    for i_w, i_n, sgn in ((31, 32, -1), (35, 34, 1)):
        w, n = sh[i_w], sh[i_n]
        wing = _catmull_rom(
            np.array([w + _o(-sgn * 0.005, -0.055), w + _o(sgn * 0.02, -0.025), w, n]), False, 4
        )
        cv.line(wing, (*_shade(skin, 0.6), 220), 0.008)
        nm = 0.5 * (w + n) + np.array([0.0, -0.008])
        cv.poly(_ellipse(nm[0], nm[1], 0.018, 0.009, 14), (*_shade(skin, 0.35), 255))
    cv.line(sh[[31, 32, 33, 34, 35]], (*_shade(skin, 0.65), 160), 0.006)

    # Mouth: lips, then the open interior with teeth.
    outer = _catmull_rom(sh[48:60], closed=True, n=5)
    cv.poly(outer, (*app.lip, 255))
    inner_pts = sh[60:68]
    inner = _catmull_rom(inner_pts, closed=True, n=5)
    gap = float(sh[[65, 66, 67], 1].mean() - sh[[61, 62, 63], 1].mean())
    if gap > 0.01:
        mask = Image.new("L", cv.img.size, 0)
        ImageDraw.Draw(mask).polygon(cv.px(inner), fill=255)
        layer = Image.new("RGB", cv.img.size, (60, 18, 22))
        ld = ImageDraw.Draw(layer)
        top = sh[[60, 61, 62, 63, 64]]
        teeth = np.vstack([top + _o(0, -0.02), (top + _o(0, 0.032))[::-1]])
        ld.polygon(cv.px(teeth), fill=(236, 232, 220))
        if gap > 0.05:
            bot = sh[[64, 65, 66, 67, 60]]
            ld.polygon(
                cv.px(np.vstack([bot + _o(0, 0.02), (bot + _o(0, -0.018))[::-1]])),
                fill=(220, 215, 205),
            )
        cv.img.paste(layer, (0, 0), mask)
        cv.draw = ImageDraw.Draw(cv.img, "RGBA")
    line_col = (*_shade(app.lip, 0.45), 255)
    cv.line(_catmull_rom(sh[[60, 61, 62, 63, 64]], False, 5), line_col, 0.008)
    if gap > 0.01:
        cv.line(_catmull_rom(sh[[64, 65, 66, 67, 60]], False, 5), line_col, 0.006)
    # Jaw outline.
    cv.line(sh[0:17], (*_shade(skin, 0.7), 160), 0.008)

    img = cv.img.reduce(k) if k > 1 else cv.img
    if app.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(app.blur))
    arr = np.asarray(img, dtype=np.float32)
    mean = arr.mean()
    arr = (arr - mean) * app.contrast + mean * app.brightness
    if app.noise_sigma > 0:
        arr = arr + rng.normal(0.0, app.noise_sigma, size=arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
