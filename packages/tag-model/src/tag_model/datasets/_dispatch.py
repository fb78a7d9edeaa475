"""``load_fer_dataset``: one entry point for every reader."""

from __future__ import annotations

import os
from typing import Any

import datasets as hf

from ._affectnet import load_affectnet
from ._common import LabelSpaceArg, LoadReport
from ._ferplus import load_ferplus
from ._generic import load_csv, load_folder
from ._rafdb import load_rafdb

__all__ = ["FER_SOURCES", "load_fer_dataset"]

FER_SOURCES: tuple[str, ...] = ("rafdb", "ferplus", "affectnet", "folder", "csv")
"""Source names accepted by :func:`load_fer_dataset`."""

_ALIASES = {
    "rafdb": "rafdb",
    "raf-db": "rafdb",
    "raf_db": "rafdb",
    "ferplus": "ferplus",
    "fer+": "ferplus",
    "fer_plus": "ferplus",
    "affectnet": "affectnet",
    "affectnet7": "affectnet",
    "affectnet8": "affectnet",
    "folder": "folder",
    "imagefolder": "folder",
    "csv": "csv",
}


def load_fer_dataset(
    name: str,
    root: str | os.PathLike[str],
    split: str | None = None,
    *,
    label_space: LabelSpaceArg = None,
    **kwargs: Any,
) -> hf.Dataset | tuple[hf.Dataset, LoadReport]:
    """Load a FER source by name: ``rafdb``, ``ferplus``, ``affectnet``, ``folder`` or ``csv``.

    ``root`` is the dataset root (for ``csv``, the CSV file). ``split`` defaults to ``"train"``
    for RAF-DB, FERPlus and AffectNet and to None (no split) for ``folder``/``csv``.
    ``affectnet7``/``affectnet8`` set ``classes``. Other keyword arguments go to the reader
    (``rule=``, ``classes=``, ``skip_missing=``, ``return_report=``, ...).

    ``label_space`` works for every source: a space name (``rafdb``, ``ferplus``,
    ``affectnet7``, ``affectnet8``, ``canonical``), a :class:`~tag_model.au.LabelSpace` or an
    explicit list of labels. ``label_id`` indexes into it; rows whose label is outside it are
    dropped and counted in the :class:`LoadReport` (``dropped["not_in_label_space:<label>"]``,
    also in ``dataset.info.description`` and logged as a warning). Default: the source's own
    space (all eight canonical classes for ``folder``/``csv``).

    >>> load_fer_dataset("nope", ".")
    Traceback (most recent call last):
    ...
    ValueError: unknown FER source 'nope'; choose one of rafdb, ferplus, affectnet, folder, csv
    """
    key = name.strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown FER source {name!r}; choose one of {', '.join(FER_SOURCES)}")
    src = _ALIASES[key]
    if key in ("affectnet7", "affectnet8"):
        kwargs.setdefault("classes", int(key[-1]))
    kwargs["label_space"] = label_space
    if src == "rafdb":
        return load_rafdb(root, split or "train", **kwargs)
    if src == "ferplus":
        return load_ferplus(root, split or "train", **kwargs)
    if src == "affectnet":
        return load_affectnet(root, split or "train", **kwargs)
    if src == "folder":
        return load_folder(root, split, **kwargs)
    return load_csv(root, split=split, **kwargs)
