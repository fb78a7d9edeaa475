"""Trace-building throughput: 512 faces, template-teacher protocol, a local OpenAI-compatible
server answering every request after a fixed 200 ms, concurrency 32.

``tag_train.traces.build_traces`` (a prep pool overlapped with 32 requests always in flight,
records per face) against the chunked loop it replaced (:func:`chunked_baseline`: prepare 16
faces serially, send them, wait for the slowest reply, repeat), same data, same server, same
run. The goal: total <= 1.3x ideal, ideal = requests x 200 ms / 32.

The server runs in its own process, as a real one would, so it does not share the
builder's GIL. It is ``tests/_chat_server.AsyncChatServer``: one asyncio loop, as uvicorn
serves vLLM, each reply leaving 200 ms after its request was read. The thread-per-connection
test server queued every request of a 32-request burst behind the others on its own GIL:
alone, with a trivial client, it answered in 0.245 s instead of 0.2 s, and that server's
overhead, not the builder's, was charged to the builder. The asyncio one answers in 0.201 s.
It still shares this machine's two cores with the builder.

    uv run pytest bench/bench_traces.py --benchmark-only -s
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

N_FACES = 512
CONCURRENCY = 32
DELAY_S = 0.2
LABELS = ("happiness", "sadness", "surprise", "anger")
CFG = dict(family="qwen2_vl", labels=LABELS, min_face_px=32, use_dlib=False)

_SERVER = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from tests._chat_server import AsyncChatServer, template_behaviour
AsyncChatServer(template_behaviour({DELAY_S})).serve(lambda url: print(url, flush=True))
"""


@pytest.fixture(scope="module")
def server_url():
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://"), url
        yield url
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    from tag_model.datasets import load_rafdb
    from tag_model.synth import attach_synth_landmarks, write_rafdb_layout

    root = tmp_path_factory.mktemp("bench-synth")
    write_rafdb_layout(root, N_FACES, size=112, seed=0, labels=LABELS, test_fraction=0.0)
    return attach_synth_landmarks(load_rafdb(root, "train"), str(root))


def chunked_baseline(dataset: Any, teacher: Any, chunk_size: int = 16) -> dict[str, int]:
    """The pre-streaming builder loop, kept as the baseline: per chunk, prepare each face
    serially, send the chunk's requests together and wait for all, judge, resend the chunk's
    retries together, then move on. Returns ``{"requests", "kept"}`` (no records written)."""
    import numpy as np
    from tag_model.activation import build_activated_list
    from tag_model.au import AU_CATALOGUE
    from tag_model.backbones import get_adapter
    from tag_model.detectors import GeometricAUDetector
    from tag_model.grounding import parse_trace
    from tag_model.quality import QualityFilter
    from tag_train.teachers import TeacherRequest
    from tag_train.traces import teacher_system_prompt, teacher_user_prompt
    from tag_train.traces._builder import _to_entries

    adapter = get_adapter(CFG["family"])
    det, quality = GeometricAUDetector(), QualityFilter(min_face_px=32, min_sharpness=10.0)
    system = teacher_system_prompt(CFG["family"])
    names = {k: v.name for k, v in AU_CATALOGUE.items()}
    stats = {"requests": 0, "kept": 0}
    for start in range(0, len(dataset), chunk_size):
        pending = []
        for i in range(start, min(start + chunk_size, len(dataset))):
            row = dataset[i]
            image = row["image"].convert("RGB")
            lm = np.asarray(row["landmarks"], dtype=np.float32).reshape(-1, 2)
            if not quality.check(image, lm).ok:
                continue
            act = build_activated_list(lm, image.size, det.predict(image=image, landmarks=lm))
            pending.append(
                {"sid": f"b:{i}", "image": image, "label": row["label"], "elim": [], "n": 0,
                 "entries": _to_entries(act, adapter, image.size)}
            )  # fmt: skip
        while pending:
            reqs = [
                TeacherRequest(
                    sample_id=p["sid"],
                    image=p["image"],
                    labels=LABELS,
                    activated=p["entries"],
                    system=system,
                    user=teacher_user_prompt(
                        LABELS, p["entries"], eliminated=p["elim"], au_names=names
                    ),
                    eliminated=tuple(p["elim"]),
                    attempt=p["n"],
                )
                for p in pending
            ]
            replies = teacher.generate(reqs)
            stats["requests"] += len(reqs)
            still = []
            for p, rep in zip(pending, replies, strict=True):
                p["n"] += 1
                parsed = parse_trace(rep.text, labels=LABELS)
                if parsed.format_ok and parsed.answer == p["label"]:
                    stats["kept"] += 1
                elif p["n"] < 5 and parsed.format_ok:
                    p["elim"].append(parsed.answer)
                    still.append(p)
            pending = still
    return stats


def _teacher(url: str):
    from tag_train.teachers import OpenAITeacher

    return OpenAITeacher(
        url, "bench", api_key_env=None, concurrency=CONCURRENCY, timeout=30.0, max_retries=2
    )


def _setup(benchmark, backend: str, baseline: bool = False) -> None:
    benchmark.group = (
        f"trace build, {N_FACES} faces, {DELAY_S * 1e3:.0f} ms/request, c={CONCURRENCY}"
    )
    benchmark.extra_info["backend"] = backend
    benchmark.extra_info["baseline"] = baseline


def test_chunked_baseline(benchmark, faces, server_url) -> None:
    _setup(benchmark, "chunked-16", baseline=True)
    with _teacher(server_url) as t:
        chunked_baseline(faces.select(range(4)), t)  # imports, connections
        t0 = time.perf_counter()
        stats = benchmark.pedantic(chunked_baseline, args=(faces, t), rounds=1, iterations=1)
        wall = time.perf_counter() - t0
    ideal = stats["requests"] * DELAY_S / CONCURRENCY
    benchmark.extra_info.update(requests=stats["requests"], ideal_s=ideal, ratio=wall / ideal)
    print(f"\nchunked baseline: {wall:.2f}s for {stats['requests']} requests, "
          f"ideal {ideal:.2f}s, {wall / ideal:.2f}x ideal")  # fmt: skip


def test_streaming_builder(benchmark, faces, server_url, tmp_path) -> None:
    from tag_train.traces import TraceBuildConfig, build_traces

    _setup(benchmark, "streaming")
    cfg = TraceBuildConfig(**CFG, concurrency=CONCURRENCY, prep_workers=2)
    with _teacher(server_url) as t:
        build_traces(faces.select(range(4)), t, tmp_path / "warm", cfg, progress=False)  # imports
        t0, cpu0 = time.perf_counter(), time.process_time()
        s = benchmark.pedantic(
            build_traces, args=(faces, t, tmp_path / "out", cfg), kwargs={"progress": False},
            rounds=1, iterations=1,
        )  # fmt: skip
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    ideal = s.requests * DELAY_S / CONCURRENCY
    benchmark.extra_info.update(requests=s.requests, ideal_s=ideal, ratio=wall / ideal, cpu_s=cpu)
    print(f"\nstreaming builder: {wall:.2f}s for {s.requests} requests (records, assembly and "
          f"save included), ideal {ideal:.2f}s, {wall / ideal:.2f}x ideal; builder CPU "
          f"{cpu:.2f}s")  # fmt: skip
    assert s.complete and s.total == N_FACES
    if benchmark.disabled:  # CI's untimed pass (--benchmark-disable): no speed goal
        return
    assert wall <= 1.3 * ideal, (
        f"{wall:.2f}s > 1.3 x ideal {ideal:.2f}s (builder CPU {cpu:.2f}s: CPU-bound when "
        "close to the wall time, i.e. the machine has no spare core for it)"
    )
