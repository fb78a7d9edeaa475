"""Reading and writing a run directory: ``run.json`` metadata and the per-sample JSONL.

A run directory holds::

    run.json        metadata: model, dataset, split, prompt, seed, label space, versions
    samples.jsonl   one record per sample (appended as generation goes; resumable)
    metrics.json    accuracy, macro-F1, confusion matrix, faithfulness (written at the end)
    confusion.png   the confusion matrix
    images/         copies of images that had no file path in the dataset
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tag_model.jsonl import JsonlError, read_jsonl

__all__ = [
    "METRICS_NAME",
    "RUN_META_NAME",
    "SAMPLES_NAME",
    "EvalDatasetError",
    "EvalInputError",
    "EvalModelError",
    "check_records_label_space",
    "group_pairs",
    "load_record_image",
    "load_run",
    "read_records",
    "read_run_meta",
    "write_json",
]

RUN_META_NAME = "run.json"
SAMPLES_NAME = "samples.jsonl"
METRICS_NAME = "metrics.json"


class EvalInputError(ValueError):
    """Bad user input (paths, datasets, run directories); the message says what and where.

    ``exit_code`` is the status ``tag-eval`` exits with: 2 for bad input or usage; the
    subclasses :class:`EvalModelError` (3) and :class:`EvalDatasetError` (4) say more.
    """

    exit_code = 2


class EvalModelError(EvalInputError):
    """The model or checkpoint is missing or cannot be loaded (exit status 3)."""

    exit_code = 3


class EvalDatasetError(EvalInputError):
    """The dataset is missing, malformed, empty or lists missing images (exit status 4)."""

    exit_code = 4


def read_records(
    path: str | os.PathLike[str], *, repair: bool = False
) -> tuple[list[dict[str, Any]], int]:
    """:func:`tag_model.jsonl.read_jsonl` (a torn last line dropped, with ``repair`` also cut
    off the file), a corrupt line raised as :class:`EvalInputError` naming file and line."""
    try:
        return read_jsonl(path, repair=repair)
    except JsonlError as exc:
        raise EvalInputError(str(exc)) from exc


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    p = Path(path)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(p)


def read_run_meta(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's ``run.json``; :class:`EvalInputError` when the directory is not a run."""
    d = Path(run_dir)
    meta_path = d / RUN_META_NAME
    if not d.is_dir():
        raise EvalInputError(f"run directory not found: {d}")
    if not meta_path.exists():
        raise EvalInputError(f"{d} is not a tag-eval run: {RUN_META_NAME} is missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise EvalInputError(f"{meta_path}: invalid JSON ({exc})") from exc
    if not isinstance(meta, dict) or "label_space" not in meta:
        raise EvalInputError(f"{meta_path}: no 'label_space' entry")
    return meta


def check_records_label_space(
    records: list[dict[str, Any]], meta: Mapping[str, Any], source: str | os.PathLike[str]
) -> None:
    """Every record must carry the run's label space (name and label names)."""
    space = meta["label_space"]
    for lineno, rec in enumerate(records, start=1):
        if rec.get("label_space") != space["name"]:
            raise EvalInputError(
                f"{source}:{lineno}: record {rec.get('id')!r} is from label space "
                f"{rec.get('label_space')!r} but this run uses {space['name']!r} "
                f"({', '.join(space['names'])}); use another --output_dir"
            )
        label = rec.get("label")
        if label is not None and label not in space["names"]:
            raise EvalInputError(
                f"{source}:{lineno}: label {label!r} of record {rec.get('id')!r} is not in "
                f"label space {space['name']!r} ({', '.join(space['names'])})"
            )


def load_run(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(meta, records)`` of a finished or partial run, label space checked."""
    meta = read_run_meta(run_dir)
    path = Path(run_dir) / SAMPLES_NAME
    records, _ = read_records(path)
    check_records_label_space(records, meta, path)
    return meta, records


def load_record_image(rec: Mapping[str, Any], run_dir: str | os.PathLike[str] | None = None):
    """The record's image (``image_file``, relative to ``run_dir`` if not absolute) or ``None``."""
    from PIL import Image

    p = rec.get("image_file")
    if p:
        path = Path(p)
        if not path.is_absolute() and run_dir is not None:
            path = Path(run_dir) / path
        if path.exists():
            with Image.open(path) as im:
                return im.convert("RGB")
    return None


def group_pairs(
    pairs: Sequence[Mapping[str, Any]], scale: float = 1.0
) -> list[tuple[tuple[int, ...], list[float]]]:
    """``(aus, box)`` per distinct box (a step "AU4 AU9 <bbox>" gives two pairs, one box),
    boxes multiplied by ``scale``, in first-seen order."""
    out: dict[tuple[float, ...], list[int]] = {}
    for p in pairs:
        out.setdefault(tuple(float(v) for v in p["box"]), []).append(int(p["au"]))
    return [(tuple(aus), [v * scale for v in box]) for box, aus in out.items()]
