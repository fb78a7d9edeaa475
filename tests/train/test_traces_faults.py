"""Trace building against a real local OpenAI-compatible server with injected faults: nothing
is lost, teacher errors are never final, the circuit breaker stops an outage, requests stream."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import datasets
import pytest
from tag_train.teachers import OpenAITeacher
from tag_train.traces import (
    FINAL_STATUSES,
    TeacherOutageError,
    TraceBuildConfig,
    build_traces,
    load_records,
)

from .._chat_server import ChatServer, completion, template_behaviour, template_reply
from .conftest import LABELS

CFG = dict(family="qwen2_vl", labels=LABELS, min_face_px=32, use_dlib=False)


def _teacher(srv: ChatServer, **kw) -> OpenAITeacher:
    # one HTTP retry, as real builds have (5 by default): an isolated fault is retried, a
    # window of them or an outage is a teacher error
    opts = dict(api_key_env=None, concurrency=4, timeout=1.0, max_retries=1, backoff=0.0)
    return OpenAITeacher(srv.base_url, "teacher", **{**opts, **kw})


class Faults:
    """Server behaviour: a 500 window, garbage and truncated traces, dropped connections,
    timeouts, then fully down after ``down_after`` requests; ``mode = "ok"`` recovers."""

    def __init__(self, down_after: int | None = None) -> None:
        self.n = 0
        self.mode = "faulty"
        self.down_after = down_after
        self.lock = threading.Lock()

    def __call__(self, body, call):
        with self.lock:
            self.n += 1
            n = self.n
        ok = (200, completion(template_reply(body)), 0.0)
        if self.mode == "ok":
            return ok
        if self.mode == "down" or (self.down_after is not None and n > self.down_after):
            return 500, {"error": {"message": "server down"}}, 0.0
        if 4 <= n < 12:
            return 500, {"error": {"message": "internal error"}}, 0.0
        k = n % 8
        if k == 1:
            return 200, completion("I am not sure what this face shows."), 0.0  # garbage
        if k == 3:
            return 200, completion(template_reply(body)[:60]), 0.0  # truncated trace
        if k == 5:
            return "drop", None, 0.0  # connection closed without a response
        if k == 7:
            return 200, b'{"choices": [{"message": {"content": "Glob', 0.0  # truncated body
        if n in (11, 22):
            return ok[0], ok[1], 1.6  # past the client's timeout
        return ok


def _check_complete(out, n: int) -> dict[str, dict]:
    recs = load_records(out)
    assert len(recs) == n
    assert {r["status"] for r in recs.values()} <= {"kept", "rejected_format", "rejected_label"}
    ds = datasets.load_from_disk(str(out))
    assert len(ds["id"]) == len(set(ds["id"])) == sum(r["status"] == "kept" for r in recs.values())
    summary = json.loads((out / "_build" / "summary.json").read_text())
    assert summary["teacher_error"] == 0 and summary["not_built"] == 0
    assert summary["kept"] + summary["rejected_format"] + summary["rejected_label"] == n
    return recs


def test_faults_then_outage_then_recovery_loses_nothing(synth_ds, tmp_path):
    synth_ds = datasets.concatenate_datasets([synth_ds, synth_ds])  # 48 faces, 48 ids
    faults = Faults(down_after=30)
    cfg = TraceBuildConfig(**CFG, concurrency=4, max_consecutive_teacher_errors=6)
    out = tmp_path / "o"
    with ChatServer(faults) as srv, _teacher(srv) as t:
        with pytest.raises(TeacherOutageError, match="rerun the same command") as err:
            build_traces(synth_ds, t, out, cfg, progress=False)
        first = err.value.summary
        assert first.teacher_error > 0 and first.teacher_errors >= 6
        assert not (out / "state.json").exists()  # an outage never assembles a partial dataset
        recs = load_records(out)
        assert any(r["status"] == "teacher_error" for r in recs.values())
        lines = (out / "_build" / "records.jsonl").read_text().splitlines()
        finals = Counter(
            json.loads(x)["id"] for x in lines if json.loads(x)["status"] != "teacher_error"
        )
        assert max(finals.values()) == 1  # a finished face is recorded once
        faults.mode = "ok"
        sent_before = len(srv.requests)
        s = build_traces(synth_ds, t, out, cfg, progress=False)  # the same call, no overwrite
        errors = [
            r.get("error") for r in load_records(out).values() if r["status"] == "teacher_error"
        ]
        assert s.complete and s.teacher_error == 0 and s.total == len(synth_ds), errors
        assert len(srv.requests) > sent_before  # the errored faces were asked again
    recs = _check_complete(out, len(synth_ds))
    # every final verdict is about content: a clean build agrees on all but format rejects
    with ChatServer(template_behaviour()) as clean, _teacher(clean) as t2:
        build_traces(synth_ds, t2, tmp_path / "clean", cfg, progress=False)
    ref = load_records(tmp_path / "clean")
    for sid, r in recs.items():
        if r["status"] != "rejected_format":
            assert r["status"] == ref[sid]["status"], sid


def test_outage_of_every_request_is_retried_after_recovery_via_the_cli(tmp_path, capsys):
    from tag_train.cli import main

    faults = Faults()
    faults.mode = "down"
    out = tmp_path / "synth-out"
    with ChatServer(faults) as srv:
        argv = [
            "traces",
            "--dataset", "synth", "--synth_n", "20", "--output_dir", str(out),
            "--teacher", "openai", "--teacher_model", "t", "--base_url", srv.base_url,
            "--max_http_retries", "1", "--timeout", "5", "--concurrency", "4",
            "--family", "qwen2_vl", "--min_face_px", "32", "--use_dlib", "false",
            "--progress", "false",
        ]  # fmt: skip
        assert main(argv) == 5  # 16 faces < 20 in a row: no breaker, but not a success
        err = capsys.readouterr().err
        assert "16 face(s) got teacher errors" in err and "rerun the same command" in err
        summary = json.loads((out / "_build" / "summary.json").read_text())
        assert (summary["teacher_error"], summary["kept"], summary["rejected_format"]) == (16, 0, 0)
        assert [p.name for p in (out / "_build").iterdir() if p.name.startswith("synth-")] == [
            "synth-n20-size112-seed0"
        ]  # the synth faces live under the output dir: the same command finds them
        faults.mode = "ok"
        n_before = len(srv.requests)
        assert main(argv) == 0
        assert len(srv.requests) >= n_before + 16
    _check_complete(out, 16)
    assert json.loads((out / "_build" / "summary.json").read_text())["kept"] > 0


def test_circuit_breaker_stops_with_exit_5_and_one_line(tmp_path, capsys):
    from tag_train.cli import main

    faults = Faults()
    faults.mode = "down"
    out = tmp_path / "b"
    with ChatServer(faults) as srv:
        code = main(
            [
                "traces",
                "--dataset",
                "synth",
                "--synth_n",
                "40",
                "--output_dir",
                str(out),
                "--teacher",
                "openai",
                "--teacher_model",
                "t",
                "--base_url",
                srv.base_url,
                "--max_http_retries",
                "0",
                "--concurrency",
                "2",
                "--max_consecutive_teacher_errors",
                "5",
                "--family",
                "qwen2_vl",
                "--min_face_px",
                "32",
                "--use_dlib",
                "false",
                "--progress",
                "false",
            ]
        )
        n_sent = len(srv.requests)
    assert code == 5
    err = [x for x in capsys.readouterr().err.splitlines() if "teacher outage" in x]
    assert len(err) == 1 and "5 requests in a row failed" in err[0] and "HTTP 500" in err[0]
    assert "rerun the same command" in err[0]
    assert 5 <= n_sent <= 5 + 2  # stopped at the breaker (plus the requests in flight)
    summary = json.loads((out / "_build" / "summary.json").read_text())
    assert summary["teacher_error"] >= 5 and summary["not_built"] > 0 and summary["kept"] == 0


def test_requests_stream_at_full_concurrency(synth_ds, tmp_path):
    live = {"now": 0, "max": 0}
    lock = threading.Lock()

    def behaviour(body, call):
        with lock:
            live["now"] += 1
            live["max"] = max(live["max"], live["now"])
        time.sleep(0.15)
        with lock:
            live["now"] -= 1
        return 200, completion(template_reply(body)), 0.0

    # chunk_size 4 was the old barrier (4 in flight at most); a streaming teacher ignores it
    cfg = TraceBuildConfig(**CFG, concurrency=8, chunk_size=4)
    with ChatServer(behaviour) as srv, _teacher(srv, concurrency=8) as t:
        s = build_traces(synth_ds, t, tmp_path / "s", cfg, progress=False)
    assert live["max"] == 8 and s.requests >= 24
    # (wall-clock throughput is measured by bench/bench_traces.py, not asserted here)


def test_extra_body_and_rate_limit(synth_ds, tmp_path):
    from tag_train.traces._cli import parse_extra_body

    extra = parse_extra_body('{"top_p": 0.5, "chat_template_kwargs": {"enable_thinking": false}}')
    with pytest.raises(ValueError, match=r"--extra_body '\[1\]' must be a JSON object"):
        parse_extra_body("[1]")
    with pytest.raises(ValueError, match="is not JSON"):
        parse_extra_body("{top_p: 1}")
    cfg = TraceBuildConfig(**CFG, concurrency=4, max_requests_per_minute=600)  # 0.1 s apart
    with ChatServer(template_behaviour()) as srv, _teacher(srv, extra_body=extra) as t:
        stamps = []
        orig = t.generate

        def timed(reqs):
            stamps.append(time.monotonic())
            return orig(reqs)

        t.generate = timed
        build_traces(synth_ds.select(range(8)), t, tmp_path / "r", cfg, progress=False)
        body = srv.bodies[0]
    assert body["top_p"] == 0.5 and body["chat_template_kwargs"] == {"enable_thinking": False}
    stamps.sort()
    assert stamps[-1] - stamps[0] >= 0.1 * (len(stamps) - 1) - 0.05


def test_final_statuses_are_what_resume_skips():
    assert "teacher_error" not in FINAL_STATUSES
    assert {"kept", "rejected_format", "rejected_label"} <= FINAL_STATUSES


def test_image_files_are_sent_as_they_are(synth_ds, tmp_path):
    """The teacher gets each face's own file (no re-encoding) when it shows exactly the decoded
    image; an EXIF-rotated JPEG or an RGBA PNG is decoded as ``datasets`` does and re-encoded."""
    import base64
    import io

    from PIL import Image
    from tag_train.traces._builder import _decode_image

    rows = synth_ds.select(range(4))
    cfg = TraceBuildConfig(**CFG, concurrency=2)
    with ChatServer(template_behaviour()) as srv, _teacher(srv) as t:
        build_traces(rows, t, tmp_path / "b", cfg, progress=False)
        bodies = srv.bodies
    cells = rows.cast_column("image", datasets.Image(decode=False))["image"]
    files = {base64.b64encode(Path(c["path"]).read_bytes()).decode() for c in cells}
    sent = {b["messages"][-1]["content"][0]["image_url"]["url"] for b in bodies}
    assert {u.split(",", 1)[1] for u in sent} == files
    assert all(u.startswith("data:image/jpeg;base64,") for u in sent)

    feature = datasets.Image()
    rotated = Image.new("RGB", (30, 20), (10, 200, 30))
    rotated.putpixel((0, 0), (255, 0, 0))
    exif = rotated.getexif()
    exif[Image.ExifTags.Base.Orientation] = 6  # rotate 90 degrees clockwise
    buf = io.BytesIO()
    rotated.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    image, raw = _decode_image({"bytes": buf.getvalue(), "path": None}, feature)
    want = feature.decode_example({"bytes": buf.getvalue(), "path": None})
    assert raw is None and image.size == want.size == (20, 30)
    assert image.tobytes() == want.tobytes()
    buf = io.BytesIO()
    Image.new("RGBA", (8, 8), (1, 2, 3, 4)).save(buf, format="PNG")
    image, raw = _decode_image({"bytes": buf.getvalue(), "path": None}, feature)
    assert raw is None and image.mode == "RGBA"
    buf = io.BytesIO()
    Image.new("L", (8, 8), 7).save(buf, format="PNG")
    assert _decode_image({"bytes": buf.getvalue(), "path": None}, feature)[1] == buf.getvalue()
