"""Landmarks of a SynthFACS face set read back by the RAF-DB reader."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tag_model.synth._rafdb import read_synth_annotations

__all__ = ["attach_synth_landmarks"]

_STEM = re.compile(r"((?:train|test)_\d+)_aligned\.jpg$")


def attach_synth_landmarks(dataset: Any, root: str | Path) -> Any:
    """Fill the ``landmarks`` column of a SynthFACS RAF-DB-layout dataset from its sidecar.

    Args:
        dataset: a ``datasets.Dataset`` from ``tag_model.datasets.load_rafdb(root, split)``.
        root: the folder :func:`~tag_model.synth.write_rafdb_layout` wrote.

    Returns:
        The dataset with each row's ``landmarks`` (``[68][2]`` float pixels) taken from
        ``root/Annotation/synthfacs.npz``; rows the sidecar does not name keep theirs.
    """
    ann = read_synth_annotations(root)

    def fill(ex: dict[str, Any]) -> dict[str, Any]:
        m = _STEM.search(ex["path"])
        key = f"{m.group(1)}.jpg" if m else None
        if key in ann:
            return {"landmarks": ann[key][0].astype("float32").tolist()}
        return {"landmarks": ex["landmarks"]}

    return dataset.map(fill, desc="synth landmarks")
