"""The human side of the preference study: an HTML page and answer sheet out, scores back in.

:func:`export_human_study` writes, for pairs of records of two runs on the same images, an
HTML page with the image and both traces side by side, each with its boxes drawn, plus a CSV
answer sheet. Left/right is randomised per item under a seed; the key that maps items back to
runs is a separate JSON file. :func:`import_answers` reads filled sheets back and scores them
like the LLM judge (:func:`tag_eval.judge.summarize_outcomes`: win / tie / loss of run A per
criterion, with Wilson intervals).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tag_eval._records import EvalInputError, group_pairs, load_record_image, write_json
from tag_eval.judge import CRITERIA, summarize_outcomes

__all__ = ["SHEET_COLUMNS", "export_human_study", "import_answers"]


SHEET_COLUMNS = ("item", "rater", *CRITERIA, "comment")
"""Columns of the answer sheet, in order."""


def _boxed_image_b64(rec: Mapping[str, Any], run_dir: Any, max_side: int = 384) -> str | None:
    from tag_model.draw import draw_au_boxes

    image = load_record_image(rec, run_dir)
    if image is None:
        return None
    scale = max(max_side / max(image.size), 1.0)
    if scale > 1:  # upscale first so that boxes and labels stay crisp
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    groups = group_pairs(rec.get("pred_pairs") or [], scale)
    boxes = [b for _, b in groups]
    labels = [" ".join(f"AU{a}" for a in aus if a) or "box" for aus, _ in groups]
    drawn = draw_au_boxes(image, boxes, labels, color=(40, 220, 40)) if boxes else image
    buf = io.BytesIO()
    drawn.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def export_human_study(
    pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    out_dir: str | os.PathLike[str],
    *,
    run_a: Any = None,
    run_b: Any = None,
    seed: int = 0,
) -> dict[str, str]:
    """Write ``human_study.html``, ``answer_sheet.csv`` and ``human_key.json`` into ``out_dir``.

    Each item shows the image and both traces side by side (left/right drawn at random
    under ``seed``) with their boxes drawn. Raters fill one row per item in the answer sheet
    with ``left``, ``right`` or ``tie`` for each criterion. Keep ``human_key.json`` away from
    raters: it maps items back to runs.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    key: dict[str, Any] = {"run_a": str(run_a), "run_b": str(run_b), "items": {}}
    blocks = []
    rows = []
    for i, (ra, rb) in enumerate(pairs):
        item = f"item{i + 1:04d}"
        a_left = rng.random() < 0.5
        key["items"][item] = {"id": ra["id"], "left": "a" if a_left else "b"}
        left, right = (ra, rb) if a_left else (rb, ra)
        left_dir, right_dir = (run_a, run_b) if a_left else (run_b, run_a)
        cells = []
        for side, rec, rdir in (("Left", left, left_dir), ("Right", right, right_dir)):
            b64 = _boxed_image_b64(rec, rdir)
            img = (
                f'<img src="data:image/png;base64,{b64}" alt="{side} boxes">'
                if b64
                else "<p>(image missing)</p>"
            )
            cells.append(
                f'<div class="side"><h3>{side}</h3>{img}'
                f"<pre>{html.escape(rec.get('trace') or '')}</pre></div>"
            )
        blocks.append(f'<section><h2>{item}</h2><div class="pair">{"".join(cells)}</div></section>')
        rows.append({"item": item, "rater": "", **dict.fromkeys(CRITERIA, ""), "comment": ""})
    crit_html = "".join(f"<li><b>{c.replace('_', ' ')}</b></li>" for c in CRITERIA)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>TAG human preference study</title>
<style>body{{font-family:sans-serif;margin:2em}}.pair{{display:flex;gap:2em}}
.side{{flex:1;border:1px solid #ccc;padding:1em}}pre{{white-space:pre-wrap}}img{{max-width:100%}}</style>
</head><body><h1>Which explanation is better?</h1>
<p>For each item, fill one row of <code>answer_sheet.csv</code> with <code>left</code>,
<code>right</code> or <code>tie</code> for each criterion:</p><ul>{crit_html}</ul>
{"".join(blocks)}</body></html>"""
    (out / "human_study.html").write_text(page, encoding="utf-8")
    with (out / "answer_sheet.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=SHEET_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    write_json(out / "human_key.json", key)
    return {
        "html": str(out / "human_study.html"),
        "answer_sheet": str(out / "answer_sheet.csv"),
        "key": str(out / "human_key.json"),
    }


def import_answers(
    sheets: Sequence[str | os.PathLike[str]],
    key_path: str | os.PathLike[str] | None = None,
    *,
    level: float = 0.95,
) -> dict[str, Any]:
    """Score filled answer sheets (one row = one rater's judgment of one item).

    ``key_path`` defaults to ``human_key.json`` beside the first sheet. Blank cells are
    left out; any other value than ``left``/``right``/``tie`` raises
    :class:`EvalInputError` naming the file, line and value.
    """
    if not sheets:
        raise EvalInputError("no answer sheet given")
    kp = Path(key_path) if key_path else Path(sheets[0]).parent / "human_key.json"
    if not kp.exists():
        raise EvalInputError(f"answer key not found: {kp} (pass --key)")
    key = json.loads(kp.read_text(encoding="utf-8"))
    items = key.get("items", {})
    outcomes: list[dict[str, int | None]] = []
    for sheet in sheets:
        sp = Path(sheet)
        if not sp.exists():
            raise EvalInputError(f"answer sheet not found: {sp}")
        with sp.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("item", *CRITERIA) if c not in (reader.fieldnames or [])]
            if missing:
                raise EvalInputError(f"{sp}: missing column(s) {', '.join(missing)}")
            for lineno, row in enumerate(reader, start=2):
                item = (row.get("item") or "").strip()
                if item not in items:
                    raise EvalInputError(f"{sp}:{lineno}: item {item!r} is not in the key {kp}")
                a_left = items[item]["left"] == "a"
                o: dict[str, int | None] = {}
                for c in CRITERIA:
                    v = (row.get(c) or "").strip().lower()
                    if v == "":
                        o[c] = None
                    elif v == "tie":
                        o[c] = 0
                    elif v in ("left", "right"):
                        o[c] = 1 if (v == "left") == a_left else -1
                    else:
                        raise EvalInputError(
                            f"{sp}:{lineno}: column {c!r} has {v!r}; expected left, right, tie or blank"
                        )
                if any(v is not None for v in o.values()):
                    outcomes.append(o)
    return {
        "run_a": key.get("run_a"),
        "run_b": key.get("run_b"),
        "n_judgments": len(outcomes),
        "human": summarize_outcomes(outcomes, level=level),
    }
