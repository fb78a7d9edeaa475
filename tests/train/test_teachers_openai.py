"""The OpenAI-compatible teacher against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import logging
import threading
import time

import pytest
from PIL import Image
from tag_train.teachers import OpenAITeacher, TeacherRequest

from .._chat_server import ChatServer, completion


def _request(i: int, size: int = 32) -> TeacherRequest:
    img = Image.new("RGB", (size, size), (10 * i % 255, 100, 200))
    return TeacherRequest(
        sample_id=f"s{i}",
        image=img,
        labels=("happiness", "sadness"),
        activated=(),
        system="write a trace",
        user=f"sample {i}",
    )


def test_roundtrip_image_part_and_key_header(monkeypatch, caplog):
    monkeypatch.setenv("TAG_TEST_KEY", "sk-secret-123")

    def behaviour(body, call):
        return 200, completion("echo " + body["messages"][-1]["content"][-1]["text"]), 0.0

    with (
        ChatServer(behaviour) as srv,
        OpenAITeacher(srv.base_url, "tiny", api_key_env="TAG_TEST_KEY", concurrency=2) as t,
    ):
        caplog.set_level(logging.DEBUG)
        replies = t.generate([_request(0), _request(1), _request(2)])
        assert [r.text for r in replies] == ["echo sample 0", "echo sample 1", "echo sample 2"]
        assert replies[0].meta["completion_tokens"] == 5
        assert "error" not in replies[0].meta
        body = srv.bodies[0]
        assert body["model"] == "tiny"
        part = body["messages"][1]["content"][0]
        assert part["type"] == "image_url"
        url = part["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert img.size == (32, 32)
        assert all(h.get("Authorization") == "Bearer sk-secret-123" for h in srv.headers)
        # the key is never logged nor shown
        assert "sk-secret" not in repr(t)
        assert "sk-secret" not in caplog.text
        assert all("sk-secret" not in str(r.meta) for r in replies)


def test_500_then_200_is_retried():
    def behaviour(body, call):
        if call == 0:
            return 500, {"error": {"message": "boom"}}, 0.0
        return 200, completion("ok"), 0.0

    with (
        ChatServer(behaviour) as srv,
        OpenAITeacher(srv.base_url, "m", api_key_env=None, backoff=0.01, max_retries=3) as t,
    ):
        (reply,) = t.generate([_request(0)])
    assert reply.text == "ok"
    assert reply.meta["http_retries"] == 1
    assert len(srv.requests) == 2


def test_429_retry_after_and_exhaustion():
    def behaviour(body, call):
        return 429, {"error": "slow down"}, 0.0

    with (
        ChatServer(behaviour) as srv,
        OpenAITeacher(srv.base_url, "m", api_key_env=None, backoff=0.01, max_retries=2) as t,
    ):
        (reply,) = t.generate([_request(0)])
    assert reply.text == ""
    assert "429" in reply.meta["error"]
    assert len(srv.requests) == 3  # first try + 2 retries


def test_400_is_not_retried():
    with (
        ChatServer(lambda body, call: (400, {"error": "bad"}, 0.0)) as srv,
        OpenAITeacher(srv.base_url, "m", api_key_env=None, backoff=0.01) as t,
    ):
        (reply,) = t.generate([_request(0)])
    assert reply.text == "" and "400" in reply.meta["error"]
    assert len(srv.requests) == 1


def test_timeout_then_success():
    def behaviour(body, call):
        return 200, completion(f"call {call}"), (1.0 if call == 0 else 0.0)

    with (
        ChatServer(behaviour) as srv,
        OpenAITeacher(
            srv.base_url, "m", api_key_env=None, timeout=0.3, backoff=0.01, max_retries=2
        ) as t,
    ):
        (reply,) = t.generate([_request(0)])
    assert reply.text == "call 1"
    assert reply.meta["http_retries"] == 1


def test_concurrency_is_real():
    active = 0
    peak = 0
    lock = threading.Lock()

    def behaviour(body, call):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.15)
        with lock:
            active -= 1
        return 200, completion("x"), 0.0

    with (
        ChatServer(behaviour) as srv,
        OpenAITeacher(srv.base_url, "m", api_key_env=None, concurrency=4) as t,
    ):
        t0 = time.perf_counter()
        replies = t.generate([_request(i) for i in range(8)])
        elapsed = time.perf_counter() - t0
    assert all(r.text == "x" for r in replies)
    assert peak >= 3
    assert elapsed < 8 * 0.15


def test_malformed_json_is_an_error_reply():
    with (
        ChatServer(lambda body, call: (200, {"nothing": []}, 0.0)) as srv,
        OpenAITeacher(srv.base_url, "m", api_key_env=None) as t,
    ):
        (reply,) = t.generate([_request(0)])
    assert reply.text == ""
    assert "malformed" in reply.meta["error"]


def test_bad_concurrency_rejected():
    with pytest.raises(ValueError, match="concurrency"):
        OpenAITeacher("http://127.0.0.1:1/v1", "m", concurrency=0)
