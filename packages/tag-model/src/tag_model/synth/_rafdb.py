"""Write SynthFACS samples in RAF-DB basic's on-disk layout.

Layout (identical to RAF-DB basic, so the RAF-DB reader consumes it unchanged)::

    root/
      EmoLabel/list_patition_label.txt      "train_00001.jpg 4" / "test_0001.jpg 1" (codes 1-7)
      Image/aligned/train_00001_aligned.jpg
      Image/aligned/test_0001_aligned.jpg
      Annotation/synthfacs.npz              SynthFACS sidecar (not part of RAF-DB)
      Annotation/synthfacs.json             generator settings

The sidecar holds the exact ground truth: ``names`` (``str[N]``, the label-file names),
``landmarks`` (``float32[N, 68, 2]``, pixels of the aligned JPEG), ``au_ids``
(``int32[A]``), ``au_intensity`` (``float32[N, A]``, 0-1) and ``labels`` (``str[N]``).
Read it with :func:`read_synth_annotations`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tag_model.au import RAFDB, canonical_label
from tag_model.synth._generator import PRESENCE_THRESHOLD, SynthFACS
from tag_model.synth._shape import SYNTH_AUS

__all__ = ["SynthAnnotation", "read_synth_annotations", "write_rafdb_layout"]


def write_rafdb_layout(
    root: str | Path,
    n: int,
    *,
    size: int = 112,
    seed: int = 0,
    test_fraction: float = 0.2,
    labels: Sequence[str] = RAFDB.names,
    jpeg_quality: int = 95,
) -> Path:
    """Render ``n`` SynthFACS faces into ``root`` in RAF-DB basic's layout (module doc).

    Samples ``0 .. n_train-1`` become ``train_00001 ..`` and the rest ``test_0001 ..``, with
    ``n_test = round(n * test_fraction)``; labels cycle through ``labels`` (which must be
    RAF-DB classes) so both splits are balanced. Existing files are overwritten. Returns
    ``root``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    for lab in labels:
        if canonical_label(lab) not in RAFDB.names:
            raise ValueError(f"{lab!r} is not a RAF-DB class {RAFDB.names}")
    root = Path(root)
    img_dir = root / "Image" / "aligned"
    img_dir.mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "Annotation").mkdir(parents=True, exist_ok=True)
    gen = SynthFACS(size=size, seed=seed, labels=labels)
    n_test = round(n * test_fraction)
    n_train = n - n_test
    names: list[str] = []
    lines: list[str] = []
    lms = np.zeros((n, 68, 2), dtype=np.float32)
    inten = np.zeros((n, len(SYNTH_AUS)), dtype=np.float32)
    col = {au: j for j, au in enumerate(SYNTH_AUS)}
    labs: list[str] = []
    for i in range(n):
        s = gen.sample(i)
        stem = f"train_{i + 1:05d}" if i < n_train else f"test_{i - n_train + 1:04d}"
        assert s.image is not None
        s.image.save(img_dir / f"{stem}_aligned.jpg", quality=int(jpeg_quality))
        names.append(f"{stem}.jpg")
        lines.append(f"{stem}.jpg {RAFDB.code_of(s.label)}")
        lms[i] = s.landmarks
        for au, v in s.au_intensity.items():
            inten[i, col[au]] = v
        labs.append(s.label)
    (root / "EmoLabel" / "list_patition_label.txt").write_text(
        "".join(line + "\n" for line in lines), encoding="utf-8"
    )
    np.savez_compressed(
        root / "Annotation" / "synthfacs.npz",
        names=np.array(names, dtype=str),
        landmarks=lms,
        au_ids=np.array(SYNTH_AUS, dtype=np.int32),
        au_intensity=inten,
        labels=np.array(labs, dtype=str),
    )
    meta = {
        "generator": "SynthFACS",
        "size": size,
        "seed": seed,
        "n": n,
        "n_train": n_train,
        "n_test": n_test,
        "labels": list(gen.labels),
        "au_ids": list(SYNTH_AUS),
        "intensity_scale": "0-1 (x5 for OpenFace 0-5)",
        "presence_threshold": PRESENCE_THRESHOLD,
        "landmarks": "iBUG-68, pixel-index coordinates of the aligned JPEG",
    }
    (root / "Annotation" / "synthfacs.json").write_text(
        json.dumps(meta, indent=2), encoding="utf-8"
    )
    return root


class SynthAnnotation(dict):  # type: ignore[type-arg]
    """``name -> (landmarks[68, 2], {au: intensity}, label)`` read from the sidecar."""


def read_synth_annotations(root: str | Path) -> SynthAnnotation:
    """Read ``root/Annotation/synthfacs.npz`` into ``{name: (landmarks, au_intensity, label)}``.

    ``name`` is the label-file name (``"train_00001.jpg"``); AUs with zero intensity are
    omitted from the dict.
    """
    path = Path(root) / "Annotation" / "synthfacs.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no SynthFACS sidecar at {path}")
    with np.load(path, allow_pickle=False) as z:
        names, lms, ids, inten, labs = (
            z["names"], z["landmarks"], z["au_ids"], z["au_intensity"], z["labels"],
        )  # fmt: skip
    out = SynthAnnotation()
    for i, name in enumerate(names.tolist()):
        aus = {int(a): float(v) for a, v in zip(ids, inten[i]) if v > 0}
        out[str(name)] = (lms[i].copy(), aus, str(labs[i]))
    return out
