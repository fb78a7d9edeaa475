"""One detector spec, one factory: what ``tag-train traces --detector`` and
``tag-eval run --detector`` both parse, so training rewards and evaluation use one reference.

Specs:

- ``geometric``: :class:`~tag_model.detectors.GeometricAUDetector` on iBUG-68 landmarks.
- ``openface:FILE.csv``: one OpenFace 2.0 CSV whose frame ``k`` (1-based, as
  ``FeatureExtraction`` numbers an image sequence) is dataset row ``k - 1``.
- ``openface:DIR``: one CSV per image, ``DIR/<image stem>.csv`` (``FaceLandmarkImg -out_dir``
  output). A row with no CSV gets no AUs.
- ``pyfeat``: :class:`~tag_model.detectors.PyFeatDetector` (py-feat and its model weights).
- ``module.path:ClassName``: any class implementing ``predict(image=None, landmarks=None)``,
  built with no arguments.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DETECTOR_KINDS", "DetectorSpecError", "LoadedDetector", "load_detector"]

DETECTOR_KINDS: tuple[str, ...] = ("geometric", "openface", "pyfeat", "module:Class")
"""The spec forms :func:`load_detector` accepts."""

_USAGE = (
    "use 'geometric', 'openface:FILE.csv', 'openface:DIR' (one CSV per image), 'pyfeat' or "
    "'module.path:ClassName'"
)
_OPENFACE_HINT = (
    "run OpenFace 2.0 first (FeatureExtraction -fdir IMAGES -out_dir DIR for one CSV, or "
    "FaceLandmarkImg -fdir IMAGES -out_dir DIR for one CSV per image; "
    "https://github.com/TadasBaltrusaitis/OpenFace/wiki)"
)
_PYFEAT_HINT = (
    "py-feat needs its model weights, which it "
    "downloads from the Hugging Face hub on first use: run it once with network access (or "
    "copy ~/.cache/huggingface from a machine that did) before building offline"
)


class DetectorSpecError(ValueError):
    """A ``--detector`` spec that is malformed, or names a detector that cannot be loaded."""


@dataclass
class LoadedDetector:
    """A detector built from a spec, with one call shape for every kind.

    Attributes:
        spec: the spec as given.
        name: ``geometric``, ``openface``, ``pyfeat`` or the ``module:Class`` path.
        settings: what else defines its output (the CSV path and layout, the class...).
        impl: the underlying detector (``None`` for an ``openface:DIR`` folder).
        thread_safe: ``predict`` may run in several threads at once.
    """

    spec: str
    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    impl: Any = None
    thread_safe: bool = False
    _per_image: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)

    @property
    def supported_aus(self) -> tuple[int, ...]:
        return tuple(getattr(self.impl, "supported_aus", ()) or ())

    def describe(self) -> dict[str, Any]:
        """``{"name", "spec", "settings"}``: what a manifest or a trace row records."""
        return {"name": self.name, "spec": self.spec, "settings": dict(self.settings)}

    def predict(
        self,
        image: Any = None,
        landmarks: np.ndarray | None = None,
        *,
        index: int | None = None,
        path: str | None = None,
    ) -> dict[int, float]:
        """AU -> probability for dataset row ``index`` (file ``path``); ``{}``: nothing seen."""
        if self.name == "geometric":
            if landmarks is None:
                return {}
            return self.impl.predict(image=image, landmarks=landmarks)
        if self.name == "openface":
            if self.impl is not None:
                if index is None:
                    raise ValueError(f"detector {self.spec!r} needs the row index (CSV frame)")
                return self.impl.predict(frame=index + 1)
            stem = Path(path).stem if path else f"{index or 0:06d}"
            csv_path = Path(self.settings["path"]) / f"{stem}.csv"
            if not csv_path.exists():
                return {}
            with self._lock:
                det = self._per_image.get(stem)
                if det is None:
                    det = self._per_image[stem] = _openface_csv(csv_path)
            return det.predict()
        return self.impl.predict(image=image, landmarks=landmarks)

    def predict_many(
        self,
        images: Sequence[Any],
        landmarks: Sequence[np.ndarray | None],
        *,
        indices: Sequence[int | None] | None = None,
        paths: Sequence[str | None] | None = None,
    ) -> list[dict[int, float]]:
        """:meth:`predict` for several faces, with equal results. The geometric detector
        scores them in one vectorised pass (its per-face Python overhead dominates at
        dataset scale); the others go face by face."""
        n = len(images)
        indices = list(indices) if indices is not None else [None] * n
        paths = list(paths) if paths is not None else [None] * n
        if not (len(landmarks) == len(indices) == len(paths) == n):
            raise ValueError(
                f"predict_many: {n} images, {len(landmarks)} landmark sets, "
                f"{len(indices)} indices and {len(paths)} paths; they must match"
            )
        if self.name != "geometric":
            return [
                self.predict(im, lm, index=i, path=p)
                for im, lm, i, p in zip(images, landmarks, indices, paths, strict=True)
            ]
        result: list[dict[int, float]] = [{} for _ in range(n)]
        have = [k for k, lm in enumerate(landmarks) if lm is not None]
        lms = [np.asarray(landmarks[k], dtype=np.float64) for k in have]
        for k, lm in zip(have, lms, strict=True):
            if lm.shape != (68, 2):
                raise ValueError(f"landmarks must be [68, 2], got shape {lm.shape} (face {k})")
        if lms:
            for k, probs in zip(have, self.impl.predict_dicts(np.stack(lms)), strict=True):
                result[k] = probs
        return result


def _openface_csv(path: Path) -> Any:
    from tag_model.detectors._openface import OpenFaceCSVDetector

    try:
        return OpenFaceCSVDetector(path)
    except (OSError, ValueError) as exc:
        raise DetectorSpecError(f"cannot read OpenFace CSV {path}: {exc}") from exc


def load_detector(spec: str | LoadedDetector) -> LoadedDetector:
    """Build the detector ``spec`` names (see the module doc for the forms).

    Raises:
        DetectorSpecError: an unknown or malformed spec, an OpenFace path that does not exist
            or a CSV that does not parse, a py-feat that is not installed or cannot load its
            weights, or a ``module:Class`` that cannot be imported. The message says what to
            install, run or download.
    """
    if isinstance(spec, LoadedDetector):
        return spec
    text = str(spec).strip()
    kind, _, arg = text.partition(":")
    if text == "geometric":
        from tag_model.detectors._geometric import GeometricAUDetector

        return LoadedDetector(text, "geometric", {}, GeometricAUDetector(), thread_safe=True)
    if kind == "openface":
        if not arg:
            raise DetectorSpecError(f"detector {text!r}: openface needs a path; {_USAGE}")
        path = Path(arg).expanduser()
        if not path.exists():
            raise DetectorSpecError(
                f"detector {text!r}: OpenFace CSV (or folder of CSVs) not found: {path}; "
                + _OPENFACE_HINT
            )
        if path.is_dir():
            if not any(path.glob("*.csv")):
                raise DetectorSpecError(f"detector {text!r}: no *.csv in {path}; " + _OPENFACE_HINT)
            settings = {"path": str(path.resolve()), "layout": "csv_per_image"}
            return LoadedDetector(text, "openface", settings, None, thread_safe=True)
        settings = {"path": str(path.resolve()), "layout": "one_csv_frame_per_row"}
        return LoadedDetector(text, "openface", settings, _openface_csv(path), thread_safe=True)
    if text == "pyfeat" or kind == "pyfeat":
        if arg:
            raise DetectorSpecError(f"detector {text!r}: pyfeat takes no argument; {_USAGE}")
        from tag_model.detectors._pyfeat import PyFeatDetector

        try:
            impl = PyFeatDetector()
        except ImportError as exc:
            raise DetectorSpecError(f"detector 'pyfeat': {exc}; {_PYFEAT_HINT}") from exc
        except Exception as exc:  # py-feat raises many kinds when offline
            raise DetectorSpecError(
                f"detector 'pyfeat' could not load its models ({type(exc).__name__}: "
                f"{str(exc)[:200]}); {_PYFEAT_HINT}"
            ) from exc
        version = getattr(importlib.import_module("feat"), "__version__", None)
        return LoadedDetector(text, "pyfeat", {"py_feat_version": version}, impl)
    if ":" in text and arg and kind and all(p.isidentifier() for p in kind.split(".")):
        try:
            module = importlib.import_module(kind)
        except ImportError as exc:
            raise DetectorSpecError(
                f"detector {text!r}: cannot import module {kind!r} ({exc}); install the "
                "package that provides it"
            ) from exc
        cls = getattr(module, arg, None)
        if cls is None:
            raise DetectorSpecError(f"detector {text!r}: module {kind!r} has no {arg!r}")
        impl = cls()
        if not callable(getattr(impl, "predict", None)):
            raise DetectorSpecError(f"detector {text!r}: {arg} has no predict() method")
        return LoadedDetector(
            text,
            text,
            {"class": f"{kind}:{arg}"},
            impl,
            thread_safe=bool(getattr(impl, "thread_safe", False)),
        )
    raise DetectorSpecError(f"unknown detector {text!r}; {_USAGE}")
