"""Fixtures for tag-eval tests: a local chat-completions server and hand-built run dirs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .._chat_server import ChatServer
from ._fixtures import one_torch_thread


@pytest.fixture(autouse=True)
def _one_torch_thread():
    yield from one_torch_thread()


@pytest.fixture
def chat_server():
    srv = ChatServer().start()
    try:
        yield srv
    finally:
        srv.stop()


def _trace(pairs: list[tuple[int, list[float]]], answer: str, concl: list[int]) -> str:
    steps = "\n".join(
        f"Inspect region → looks active → AU{au} <bbox>[{', '.join(str(round(v)) for v in box)}]</bbox>"
        for au, box in pairs
    )
    c = " + ".join(f"AU{a}" for a in concl) or "no action units"
    return (
        f"Global analysis: a face.\nVerification loop:\n{steps}\n"
        f"Final conclusion: Combined {c} indicate {answer}.\n<answer> {answer} </answer>"
    )


def write_run(
    run_dir: Path,
    records: list[dict[str, Any]],
    *,
    space: tuple[str, list[str]] = ("rafdb", []),
    model: str = "crafted",
) -> Path:
    """A run directory as ``tag-eval run`` writes it (run.json + samples.jsonl)."""
    from tag_model.au import get_label_space

    name = space[0]
    names = space[1] or list(get_label_space(name).names)
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": model,
        "dataset": "rafdb",
        "split": "test",
        "prompt": "grounded",
        "seed": 0,
        "detector": "geometric",
        "label_space": {"name": name, "names": names},
    }
    (run_dir / "run.json").write_text(json.dumps(meta))
    with (run_dir / "samples.jsonl").open("w") as fh:
        for r in records:
            fh.write(json.dumps({**r, "label_space": name}) + "\n")
    return run_dir


@pytest.fixture(scope="session")
def synth_pool(tmp_path_factory):
    """Eight SynthFACS faces saved as PNGs, with landmarks and the region of each true AU."""
    from tag_kernels import IBUG68_REGIONS, landmarks_to_regions
    from tag_model.synth import SynthFACS

    d = tmp_path_factory.mktemp("synth_pool")
    gen = SynthFACS(size=112, seed=0)
    pool = []
    for i in range(8):
        s = gen.sample(i)
        path = d / f"test_{i:04d}.png"
        s.image.save(path)
        regions = np.asarray(
            landmarks_to_regions(
                s.landmarks[None].astype(np.float32), np.array([[112, 112]], np.float32)
            )
        )[0]
        aus = sorted(a for a, v in s.au_intensity.items() if v >= 0.5 and a in IBUG68_REGIONS.aus)
        act = [
            {
                "au": a,
                "prob": round(float(s.au_intensity[a]), 3),
                "box": regions[IBUG68_REGIONS.region_of(a)].tolist(),
            }
            for a in aus
        ]
        pool.append(
            {
                "path": str(path),
                "label": s.label,
                "landmarks": s.landmarks.tolist(),
                "activated": act,
            }
        )
    return pool


def crafted_records(pool: list[dict[str, Any]], *, quality: str) -> list[dict[str, Any]]:
    """Per-sample records for the pool: ``good`` grounds every activated AU on its region and
    answers right; ``poor`` grounds one AU off-region and answers ``neutral``."""
    from tag_model.au import RAFDB

    recs = []
    for i, p in enumerate(pool):
        act = p["activated"]
        if quality == "good":
            pairs = [(a["au"], a["box"]) for a in act]
            answer = p["label"]
        else:
            pairs = [(act[0]["au"], [0.0, 0.0, 8.0, 8.0])] if act else []
            answer = "neutral"
        concl = [a for a, _ in pairs]
        pred_id = RAFDB.names.index(answer)
        recs.append(
            {
                "id": f"test_{i:04d}",
                "index": i,
                "path": f"test_{i:04d}.png",
                "image_file": p["path"],
                "label": p["label"],
                "label_id": RAFDB.names.index(p["label"]),
                "prediction": answer,
                "prediction_id": pred_id,
                "correct": answer == p["label"],
                "trace": _trace(pairs, answer, concl),
                "parse": {"format_ok": True, "answer_ok": True, "reasons": []},
                "pred_pairs": [{"au": a, "box": b} for a, b in pairs],
                "conclusion_aus": concl,
                "landmarks": p["landmarks"],
                "landmarks_source": "dataset",
                "au_probs": {str(a["au"]): a["prob"] for a in act},
                "activated": act,
                "image_size": [112, 112],
                "timing": {
                    "batch_seconds": 0.1,
                    "batch_size": 1,
                    "seconds": 0.1,
                    "prompt_tokens": 10,
                    "new_tokens": 20,
                },
            }
        )
    return recs


@pytest.fixture
def crafted_runs(tmp_path, synth_pool):
    """Two runs on the same eight images: ``good`` (A) and ``poor`` (B)."""
    a = write_run(tmp_path / "run_good", crafted_records(synth_pool, quality="good"), model="good")
    b = write_run(tmp_path / "run_poor", crafted_records(synth_pool, quality="poor"), model="poor")
    return a, b
