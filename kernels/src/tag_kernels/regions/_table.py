"""Region tables: how landmarks become one box per face region.

A :class:`Region` is a *recipe* for one box. A :class:`RegionTable` is an ordered tuple of
regions (row ``r`` of the output of :func:`tag_kernels.landmarks_to_regions` is
``table.regions[r]``), plus the two landmark indices whose distance is the unit of length.

The recipe for face ``b`` and region ``r`` (every backend computes exactly this, in float32):

1. ``d = sqrt((x[i] - x[j])**2 + (y[i] - y[j])**2)`` with ``(i, j) = table.unit_points``; for
   iBUG-68 that is the inner-eye-corner distance ``||p39 - p42||``.
2. ``xmin, xmax, ymin, ymax`` = the bounding box of the region's landmarks.
3. Shift by ``(dx, dy) * d`` and pad by ``(pad_x, pad_y) * d`` on each side::

       x1 = xmin + (dx - pad_x) * d        x2 = xmax + (dx + pad_x) * d
       y1 = ymin + (dy - pad_y) * d        y2 = ymax + (dy + pad_y) * d

   A negative pad shrinks the box.
4. Minimum size: if ``x2 - x1 < min_w * d`` the box is re-centred on ``c = (x1 + x2) / 2`` with
   ``x1 = c - min_w * d / 2`` and ``x2 = c + min_w * d / 2``; the same for ``y`` with
   ``min_h``. Because ``min_w, min_h >= 0`` a shrunken (inverted) box becomes zero-width here,
   so results are never inverted.
5. Clamp to the image: ``x`` to ``[0, w]``, ``y`` to ``[0, h]``.

Degenerate input gives the all-zero box ``(0, 0, 0, 0)``, never an error and never NaN: any of
the region's landmarks non-finite, ``d`` non-finite or ``<= 0`` (coincident or NaN eye corners:
then every region of that face is zero), ``w`` or ``h`` non-finite or ``<= 0``, or a non-finite
box after step 4 (float32 overflow). The reward treats a zero-area box as degenerate (IoU 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

__all__ = ["IBUG68_REGIONS", "PackedRegionTable", "Region", "RegionTable"]


@dataclass(frozen=True)
class Region:
    """One box recipe: which landmarks, how far to shift and pad, and which AUs it grounds.

    Attributes:
        name: short identifier, e.g. ``"inner_brow"`` (unique within a table).
        aus: FACS numbers of the AUs this region grounds; several AUs may share one region.
        landmarks: 0-based landmark indices whose bounding box seeds the region.
        dx, dy: shift of the box, in units of ``d`` (the table's unit distance); ``+y`` is down.
        pad_x, pad_y: padding added on each side, in units of ``d`` (negative shrinks).
        min_w, min_h: minimum width / height in units of ``d`` (``>= 0``; ``0`` = none).
        source: where the recipe comes from in the literature (free text).
    """

    name: str
    aus: tuple[int, ...]
    landmarks: tuple[int, ...]
    dx: float = 0.0
    dy: float = 0.0
    pad_x: float = 0.0
    pad_y: float = 0.0
    min_w: float = 0.0
    min_h: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "aus", tuple(int(a) for a in self.aus))
        object.__setattr__(self, "landmarks", tuple(int(i) for i in self.landmarks))
        where = f"Region {self.name!r}"
        if not self.aus:
            raise ValueError(f"{where}: aus must name at least one AU, got {self.aus}")
        if any(a <= 0 for a in self.aus):
            raise ValueError(f"{where}: AU numbers must be positive, got {self.aus}")
        if not self.landmarks:
            raise ValueError(f"{where}: landmarks must not be empty")
        if any(i < 0 for i in self.landmarks):
            raise ValueError(f"{where}: landmark indices must be >= 0, got {self.landmarks}")
        for k in ("dx", "dy", "pad_x", "pad_y", "min_w", "min_h"):
            v = float(getattr(self, k))
            if not np.isfinite(v):
                raise ValueError(f"{where}: {k} must be finite, got {v}")
            object.__setattr__(self, k, v)
        if self.min_w < 0 or self.min_h < 0:
            raise ValueError(f"{where}: min_w/min_h must be >= 0, got {self.min_w}, {self.min_h}")


class PackedRegionTable(NamedTuple):
    """A :class:`RegionTable` as plain arrays, the form the kernels read.

    Attributes:
        index: ``int32[R, P]`` landmark indices per region, right-padded with ``-1``
            (``P`` = the largest region's landmark count).
        count: ``int32[R]`` number of real indices in each row of ``index``.
        coef: ``float32[R, 6]`` per region ``(dx - pad_x, dx + pad_x, dy - pad_y, dy + pad_y,
            min_w, min_h)``: the multipliers of ``d`` in steps 3-4 of the recipe.
        unit_points: ``(i, j)`` landmark indices whose distance is ``d``.
        aus: ``int32[A]`` all AU numbers the table covers, sorted (``== table.aus``).
        au_region: ``int32[A]`` region row of ``aus[j]``.
        au_to_region: ``int32[max(aus) + 1]`` region row per AU number, ``-1`` where unknown.
        min_landmarks: smallest ``L`` the table can read (``max index + 1``).
    """

    index: np.ndarray
    count: np.ndarray
    coef: np.ndarray
    unit_points: tuple[int, int]
    aus: np.ndarray
    au_region: np.ndarray
    au_to_region: np.ndarray
    min_landmarks: int


@dataclass(frozen=True)
class RegionTable:
    """An ordered set of :class:`Region` recipes; row ``r`` of the output is ``regions[r]``.

    Attributes:
        regions: the recipes, in output order.
        unit_points: landmark indices ``(i, j)`` whose distance is the unit ``d``
            (iBUG-68 inner eye corners ``(39, 42)`` by default).
        name: a label for messages.

    Each AU may appear in at most one region; several AUs may share one.

    >>> t = RegionTable((Region("brows", (1, 2), (0, 1)), Region("mouth", (25,), (2, 3))),
    ...                 unit_points=(0, 1))
    >>> t.aus, t.region_of(2), len(t)
    ((1, 2, 25), 0, 2)
    """

    regions: tuple[Region, ...]
    unit_points: tuple[int, int] = (39, 42)
    name: str = "custom"
    _device_cache: dict[Any, Any] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "regions", tuple(self.regions))
        object.__setattr__(self, "unit_points", tuple(int(i) for i in self.unit_points))
        if not self.regions:
            raise ValueError(f"RegionTable {self.name!r}: needs at least one region")
        if len(self.unit_points) != 2 or min(self.unit_points) < 0:
            raise ValueError(
                f"RegionTable {self.name!r}: unit_points must be two indices >= 0, "
                f"got {self.unit_points}"
            )
        seen: dict[int, str] = {}
        names: set[str] = set()
        for reg in self.regions:
            if not isinstance(reg, Region):
                raise ValueError(
                    f"RegionTable {self.name!r}: regions must be Region, got {type(reg).__name__}"
                )
            if reg.name in names:
                raise ValueError(f"RegionTable {self.name!r}: duplicate region name {reg.name!r}")
            names.add(reg.name)
            for au in reg.aus:
                if au in seen:
                    raise ValueError(
                        f"RegionTable {self.name!r}: AU{au} is in both {seen[au]!r} and "
                        f"{reg.name!r}; an AU may belong to one region only"
                    )
                seen[au] = reg.name

    def __len__(self) -> int:
        """Number of regions ``R`` (rows of the output)."""
        return len(self.regions)

    @cached_property
    def aus(self) -> tuple[int, ...]:
        """Every AU number the table covers, sorted ascending (column order of ``activated_list``)."""
        return tuple(sorted(au for reg in self.regions for au in reg.aus))

    @cached_property
    def _row_of(self) -> dict[int, int]:
        return {au: r for r, reg in enumerate(self.regions) for au in reg.aus}

    def region_of(self, au: int) -> int:
        """Row of the output that grounds ``au``; ``KeyError`` naming the AU if unknown."""
        try:
            return self._row_of[int(au)]
        except (KeyError, TypeError, ValueError):
            raise KeyError(
                f"AU{au} is not in region table {self.name!r}; it covers AUs {list(self.aus)}"
            ) from None

    def region_named(self, name: str) -> int:
        """Row of the region called ``name``; ``KeyError`` if absent."""
        for r, reg in enumerate(self.regions):
            if reg.name == name:
                return r
        raise KeyError(f"no region named {name!r} in table {self.name!r}")

    @cached_property
    def packed(self) -> PackedRegionTable:
        """The table as arrays for the kernels (see :class:`PackedRegionTable`); cached."""
        R = len(self.regions)
        P = max(len(reg.landmarks) for reg in self.regions)
        index = np.full((R, P), -1, dtype=np.int32)
        count = np.zeros(R, dtype=np.int32)
        coef = np.zeros((R, 6), dtype=np.float32)
        for r, reg in enumerate(self.regions):
            index[r, : len(reg.landmarks)] = reg.landmarks
            count[r] = len(reg.landmarks)
            coef[r] = (
                reg.dx - reg.pad_x,
                reg.dx + reg.pad_x,
                reg.dy - reg.pad_y,
                reg.dy + reg.pad_y,
                reg.min_w,
                reg.min_h,
            )
        aus = np.asarray(self.aus, dtype=np.int32)
        au_region = np.asarray([self._row_of[a] for a in self.aus], dtype=np.int32)
        au_to_region = np.full(int(aus.max()) + 1, -1, dtype=np.int32)
        au_to_region[aus] = au_region
        min_l = max(int(index.max()), *self.unit_points) + 1
        for a in (index, count, coef, aus, au_region, au_to_region):
            a.setflags(write=False)
        return PackedRegionTable(
            index, count, coef, self.unit_points, aus, au_region, au_to_region, min_l
        )

    def on_device(self, kind: str, device: Any = None) -> Any:
        """Packed arrays converted once per ``(kind, device)`` and cached (used by backends)."""
        key = (kind, str(device))
        hit = self._device_cache.get(key)
        if hit is None:
            p = self.packed
            if kind == "torch":
                import torch

                hit = tuple(
                    torch.as_tensor(np.array(a)).to(device)
                    for a in (p.index, p.count, p.coef, p.aus, p.au_region)
                )
            elif kind == "jax":
                import jax
                import jax.numpy as jnp

                # Evaluated eagerly, so that a first use inside a jit/grad/nnx trace caches
                # concrete arrays, never tracers that would leak into the next trace.
                with jax.ensure_compile_time_eval():
                    hit = tuple(
                        jnp.asarray(a) for a in (p.index, p.count, p.coef, p.aus, p.au_region)
                    )
            else:
                raise ValueError(f"unknown kind {kind!r}")
            self._device_cache[key] = hit
        return hit


_JAA = (
    "JAA-Net AU centres (Shao et al., ECCV 2018 / TPAMI 2021; after Li et al., EAC-Net, "
    "CVPR 2017): landmark-anchored centres shifted in units of the inner-eye-corner distance"
)
_SAUC = (
    'Belharbi et al., "Spatial Action Unit Cues for Interpretable Deep Facial Expression '
    'Recognition" (2024): AU cue maps from landmark groups'
)
_FAU = (
    "FAU_CVPR2021 (Jacob & Stenger, Facial Action Unit Detection with Transformers, "
    "CVPR 2021): landmark-based AU regions of interest"
)

#: The canonical iBUG-68 table (0-based indices: jaw 0-16, brows 17-21 / 22-26, nose 27-35,
#: eyes 36-41 / 42-47 with inner corners 39 and 42, outer lips 48-59, inner lips 60-67).
#: Bilateral AUs get one box spanning both sides of the face. The shifts follow the cited
#: AU-centre recipes; the box extents (padding, minimum sizes) are this project's choice,
#: tuned so that every box of a frontal dlib face stays inside the face.
IBUG68_REGIONS = RegionTable(
    name="ibug68",
    unit_points=(39, 42),
    regions=(
        # AU1 inner brow raiser: the inner brows and the forehead just above them (JAA-Net
        # shifts the inner brow corners up ~d/2). Bottom = lowest inner-brow point - 0.05 d,
        # top = highest - 0.45 d (stays under the top of dlib's face rectangle).
        Region(
            "inner_brow",
            aus=(1,),
            landmarks=(20, 21, 22, 23),
            dy=-0.25,
            pad_x=0.15,
            pad_y=0.2,
            source=f"{_JAA}; {_SAUC}",
        ),
        # AU2 outer brow raiser: the outer brows and the forehead above them (JAA-Net shifts
        # the outer brow corners up ~d/3); one box spans both brows. Bottom = lowest outer
        # brow point - 0.15 d (the brow tails can droop to the level of the upper lids).
        Region(
            "outer_brow",
            aus=(2,),
            landmarks=(17, 18, 25, 26),
            dy=-0.3,
            pad_y=0.15,
            source=f"{_JAA}; {_SAUC}",
        ),
        # AU4 brow lowerer + AU9 nose wrinkler share the glabella / nose-root box, as in the
        # TAG authors' figure ("AU4 AU9 <bbox>").
        Region(
            "glabella_nose_root",
            aus=(4, 9),
            landmarks=(21, 22, 27, 28),
            pad_x=0.2,
            pad_y=0.1,
            source=f"{_JAA} (AU4: brow centre shifted down d/3; AU9: nose root); {_FAU}",
        ),
        # AU5 upper lid raiser: the upper lids (corners and upper-lid points of both eyes).
        Region(
            "upper_lids",
            aus=(5,),
            landmarks=(36, 37, 38, 39, 42, 43, 44, 45),
            dy=-0.05,
            pad_x=0.1,
            pad_y=0.1,
            min_h=0.25,
            source=f"{_SAUC}; {_FAU}",
        ),
        # AU6 cheek raiser: infra-orbital cheeks, lower lids down to the nose tip.
        Region(
            "cheeks",
            aus=(6,),
            landmarks=(36, 40, 41, 45, 46, 47, 30),
            dy=0.1,
            pad_x=0.15,
            pad_y=0.05,
            source=f"{_JAA} (AU6: one d below the eye centres); {_SAUC}",
        ),
        # AU7 lid tightener: the lower lids and eye corners.
        Region(
            "lower_lids",
            aus=(7,),
            landmarks=(36, 39, 40, 41, 42, 45, 46, 47),
            dy=0.05,
            pad_x=0.1,
            pad_y=0.1,
            min_h=0.25,
            source=f"{_JAA} (AU7: lower-lid centres); {_SAUC}",
        ),
        # AU10 upper lip raiser: between the nostrils and the upper lip.
        Region(
            "upper_lip",
            aus=(10,),
            landmarks=(31, 33, 35, 48, 50, 51, 52, 54),
            pad_x=0.1,
            pad_y=0.05,
            source=f"{_JAA} (AU10: upper-lip centre); {_FAU}",
        ),
        # AU12 lip corner puller, AU14 dimpler, AU15 lip corner depressor, AU20 lip stretcher:
        # one box around both mouth corners (contains landmarks 48 and 54).
        Region(
            "lip_corners",
            aus=(12, 14, 15, 20),
            landmarks=(48, 54),
            pad_x=0.3,
            pad_y=0.35,
            source=f"{_JAA} (AU12/14/15/20: lip corners); {_SAUC}",
        ),
        # AU17 chin raiser: the chin boss, from 0.15 d below the lower lip (57) to 0.05 d
        # above the chin tip (8). Note: dlib's face rectangle often cuts the chin off.
        Region(
            "chin",
            aus=(17,),
            landmarks=(57, 7, 8, 9),
            dy=0.05,
            pad_x=0.1,
            pad_y=-0.1,
            min_h=0.2,
            source=f"{_JAA} (AU17: below the lower-lip centre); {_SAUC}",
        ),
        # AU23 lip tightener, AU24 lip pressor: the lips.
        Region(
            "lips",
            aus=(23, 24),
            landmarks=(48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59),
            pad_x=0.05,
            pad_y=0.05,
            source=f"{_JAA} (AU23/24: lip centres); {_FAU}",
        ),
        # AU25 lips part, AU26 jaw drop: the mouth opening (inner lips, upper/lower lip centre).
        Region(
            "mouth_opening",
            aus=(25, 26),
            landmarks=(51, 57, 60, 61, 62, 63, 64, 65, 66, 67),
            pad_x=0.1,
            pad_y=0.1,
            min_h=0.3,
            source=f"{_SAUC}; {_FAU}",
        ),
        # AU43 eyes closed: both eyes.
        Region(
            "eyes",
            aus=(43,),
            landmarks=(36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47),
            pad_x=0.1,
            pad_y=0.15,
            min_h=0.3,
            source=f"{_SAUC}; {_FAU}",
        ),
    ),
)
