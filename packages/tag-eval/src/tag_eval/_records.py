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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "METRICS_NAME",
    "RUN_META_NAME",
    "SAMPLES_NAME",
    "EvalInputError",
    "append_records",
    "check_records_label_space",
    "load_run",
    "read_jsonl",
    "read_run_meta",
    "write_json",
]

RUN_META_NAME = "run.json"
SAMPLES_NAME = "samples.jsonl"
METRICS_NAME = "metrics.json"


class EvalInputError(ValueError):
    """Bad user input (paths, datasets, run directories); the message says what and where."""


def read_jsonl(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], int]:
    """Records of a JSONL file, tolerating a truncated last line.

    Returns ``(records, n_bytes_valid)``. Every record is written with its newline in one
    write, so a last line without a newline is an interrupted write: it is dropped and
    ``n_bytes_valid`` is where it starts, so the caller can truncate the file there before
    appending. A bad complete line raises :class:`EvalInputError` naming the file, line
    number and the start of the line.
    """
    p = Path(path)
    if not p.exists():
        return [], 0
    data = p.read_bytes()
    *complete, tail = data.split(b"\n")
    records: list[dict[str, Any]] = []
    for lineno, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            snippet = raw[:80].decode("utf-8", "replace")
            raise EvalInputError(
                f"{p}:{lineno}: invalid JSONL record ({exc}): {snippet!r}"
            ) from exc
        records.append(rec)
    return records, len(data) - len(tail)


def append_records(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> None:
    """Append records as JSON lines, flushed and fsynced (one batch = one durable write)."""
    p = Path(path)
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not payload:
        return
    with p.open("a", encoding="utf-8") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


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
                f"({', '.join(space['names'])}); use another --out directory"
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
    records, _ = read_jsonl(path)
    check_records_label_space(records, meta, path)
    return meta, records
