"""Append-only JSON-lines files that survive a kill: the one reader and writer of TAG's records.

Trace builds (``records.jsonl``), evaluation runs (``samples.jsonl``) and judge runs
(``judgments.jsonl``) write each batch of records, newline included, in one flushed and fsynced
append. So a last line without its newline is a write that a kill interrupted: the reader drops
it (and, with ``repair=True``, truncates it off the file, so the next append starts on a clean
line). Any other bad line is corruption, never skipped in silence: :class:`JsonlError` names the
file, the line number and the start of the line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["JsonlError", "append_jsonl", "read_jsonl"]

logger = logging.getLogger(__name__)


class JsonlError(ValueError):
    """A complete line of a JSONL file is not a JSON object (the message names file and line)."""


def read_jsonl(
    path: str | os.PathLike[str], *, repair: bool = False
) -> tuple[list[dict[str, Any]], int]:
    """Records of a JSONL file, dropping a torn last line.

    Args:
        path: the file; a missing file reads as no records.
        repair: truncate a torn last line off the file too (before appending to it).

    Returns:
        ``(records, valid_bytes)``: the JSON objects of the complete lines, in file order
        (blank lines skipped), and the byte offset where the torn tail starts (the file size
        when there is none).

    Raises:
        JsonlError: a complete line is not valid JSON or not a JSON object.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.jsonl"
        >>> _ = p.write_text('{"id": "a"}\\n{"id": "b"}\\n{"id": "c', encoding="utf-8")
        >>> read_jsonl(p, repair=True)
        ([{'id': 'a'}, {'id': 'b'}], 24)
        >>> p.read_text(encoding="utf-8")
        '{"id": "a"}\\n{"id": "b"}\\n'
    """
    p = Path(path)
    if not p.exists():
        return [], 0
    data = p.read_bytes()
    valid = data.rfind(b"\n") + 1
    if valid < len(data):
        logger.warning("%s: dropping a torn last line (%d bytes)", p, len(data) - valid)
        if repair:
            with p.open("r+b") as fh:
                fh.truncate(valid)
    records: list[dict[str, Any]] = []
    for lineno, raw in enumerate(data[:valid].split(b"\n")[:-1], start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise ValueError(f"not a JSON object but {type(rec).__name__}")
        except (ValueError, UnicodeDecodeError) as exc:
            snippet = raw[:80].decode("utf-8", "replace")
            raise JsonlError(f"{p}:{lineno}: invalid JSONL record ({exc}): {snippet!r}") from exc
        records.append(rec)
    return records, valid


def append_jsonl(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> None:
    """Append ``records`` as JSON lines in one flushed and fsynced write (nothing for none)."""
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not payload:
        return
    with Path(path).open("a", encoding="utf-8") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
