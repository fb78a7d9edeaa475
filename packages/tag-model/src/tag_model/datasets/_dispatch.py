"""``load_fer_dataset``: one entry point for every reader."""

from __future__ import annotations

import os
from typing import Any

import datasets as hf

from ._affectnet import load_affectnet
from ._common import LoadReport
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
    name: str, root: str | os.PathLike[str], split: str | None = None, **kwargs: Any
) -> hf.Dataset | tuple[hf.Dataset, LoadReport]:
    """Load a FER source by name: ``rafdb``, ``ferplus``, ``affectnet``, ``folder`` or ``csv``.

    ``root`` is the dataset root (for ``csv``, the CSV file). ``split`` defaults to ``"train"``
    for RAF-DB, FERPlus and AffectNet and to None (no split) for ``folder``/``csv``.
    ``affectnet7``/``affectnet8`` set ``classes``. Other keyword arguments go to the reader
    (``rule=``, ``classes=``, ``skip_missing=``, ``return_report=``, ...).

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
    if src == "rafdb":
        return load_rafdb(root, split or "train", **kwargs)
    if src == "ferplus":
        return load_ferplus(root, split or "train", **kwargs)
    if src == "affectnet":
        return load_affectnet(root, split or "train", **kwargs)
    if src == "folder":
        return load_folder(root, split, **kwargs)
    return load_csv(root, split=split, **kwargs)
