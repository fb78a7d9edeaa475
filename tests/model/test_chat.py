"""tag_model.chat: the OpenAI-compatible client against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import logging
import socket
import threading
import time

import pytest
from PIL import Image
from tag_model.chat import (
    ChatClient,
    ChatConfig,
    ChatError,
    ChatRequest,
    ChatResponse,
    encoded_data_url,
    image_data_url,
)

from .._chat_server import ChatServer, completion

KEY = "sk-very-secret-4242"


def _msgs(text: str) -> list[dict]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def _cfg(srv: ChatServer, **kw) -> ChatConfig:
    kw.setdefault("api_key_env", None)
    kw.setdefault("backoff", 0.01)
    return ChatConfig(srv.base_url, "tiny", **kw)


def test_500_then_200_is_retried(caplog):
    def behaviour(body, call):
        return (500, {"error": "boom"}, 0.0) if call == 0 else (200, completion("ok"), 0.0)

    caplog.set_level(logging.WARNING, logger="tag_model.chat")
    with ChatServer(behaviour) as srv, ChatClient(_cfg(srv, max_retries=2)) as client:
        res = client.complete(_msgs("hi"), {"temperature": 0.3}, label="sample 7")
    assert isinstance(res, ChatResponse)
    assert res.text == "ok" and res.retries == 1 and res.finish_reason == "stop"
    assert res.usage["completion_tokens"] == 5 and res.raw["object"] == "chat.completion"
    assert len(srv.requests) == 2
    assert srv.bodies[0] == srv.bodies[1]  # the same body is sent again
    assert srv.bodies[0]["temperature"] == 0.3 and srv.bodies[0]["model"] == "tiny"
    assert "Authorization" not in srv.headers[0]  # no key env: no header
    (rec,) = [r for r in caplog.records if r.name == "tag_model.chat"]
    msg = rec.getMessage()
    assert "HTTP 500" in msg and "sample 7" in msg and "retry 1/2" in msg and srv.base_url in msg


def test_retries_exhausted_names_url_status_and_attempts():
    with (
        ChatServer(lambda body, call: (503, {"error": "down"}, 0.0)) as srv,
        ChatClient(_cfg(srv, max_retries=2)) as client,
        pytest.raises(ChatError) as ei,
    ):
        client.chat(_msgs("hi"))
    err = ei.value
    assert err.status == 503 and err.attempts == 3 and err.retries == 2
    assert err.url == srv.base_url + "/chat/completions"
    assert err.url in str(err) and "after 3 attempts" in str(err) and "HTTP 503" in str(err)
    assert len(srv.requests) == 3


@pytest.mark.parametrize(
    ("header", "value", "wait"), [("Retry-After", "0.4", 0.4), ("retry-after-ms", "300", 0.3)]
)
def test_retry_after_is_honoured(header, value, wait):
    def behaviour(body, call):
        if call == 0:
            return 429, {"error": "slow down"}, 0.0, {header: value}
        return 200, completion("after wait"), 0.0

    with ChatServer(behaviour) as srv, ChatClient(_cfg(srv, backoff=0.001)) as client:
        t0 = time.perf_counter()
        assert client.chat(_msgs("hi")) == "after wait"
        elapsed = time.perf_counter() - t0
    assert elapsed >= wait  # the backoff alone would be ~1 ms
    assert len(srv.requests) == 2


def test_retry_after_is_capped_by_max_backoff():
    def behaviour(body, call):
        if call == 0:
            return 503, {"error": "later"}, 0.0, {"Retry-After": "30"}
        return 200, completion("ok"), 0.0

    with ChatServer(behaviour) as srv, ChatClient(_cfg(srv, max_backoff=0.2)) as client:
        t0 = time.perf_counter()
        assert client.chat(_msgs("hi")) == "ok"
        assert time.perf_counter() - t0 < 5.0


@pytest.mark.parametrize("status", [400, 401, 404])
def test_client_errors_are_not_retried(status):
    with (
        ChatServer(lambda body, call: (status, {"error": "no"}, 0.0)) as srv,
        ChatClient(_cfg(srv, max_retries=3)) as client,
        pytest.raises(ChatError, match=f"refused the request: HTTP {status}") as ei,
    ):
        client.chat(_msgs("hi"))
    assert ei.value.status == status and ei.value.attempts == 1
    assert len(srv.requests) == 1


def test_timeout_fails_fast_then_a_retry_succeeds():
    def behaviour(body, call):
        return 200, completion(f"call {call}"), (1.5 if call == 0 else 0.0)

    with ChatServer(behaviour) as srv:
        with ChatClient(_cfg(srv, timeout=0.3, max_retries=0)) as client:
            t0 = time.perf_counter()
            with pytest.raises(ChatError, match="ReadTimeout") as ei:
                client.chat(_msgs("slow"))
            assert time.perf_counter() - t0 < 1.2
            assert ei.value.status is None and ei.value.attempts == 1
        with ChatClient(_cfg(srv, timeout=0.3, max_retries=1)) as client:
            res = client.complete(_msgs("fresh"))
        assert res.text == "call 1" and res.retries == 1


def test_connection_error_is_retried_then_reported():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    cfg = ChatConfig(
        f"http://127.0.0.1:{port}/v1", "m", api_key_env=None, max_retries=1, backoff=0.0, timeout=2
    )
    with ChatClient(cfg) as client, pytest.raises(ChatError, match="ConnectError") as ei:
        client.chat(_msgs("hi"))
    assert ei.value.attempts == 2 and ei.value.status is None


def test_malformed_200_fails_at_once_unless_asked_to_retry():
    def behaviour(body, call):
        return (200, {"nothing": []}, 0.0) if call == 0 else (200, completion("fixed"), 0.0)

    with ChatServer(behaviour) as srv:
        with ChatClient(_cfg(srv)) as client, pytest.raises(ChatError, match="malformed"):
            client.chat(_msgs("a"))
        assert len(srv.requests) == 1
        with ChatClient(_cfg(srv, retry_malformed=True)) as client:
            assert client.chat(_msgs("b")) == "fixed"
        assert len(srv.requests) == 3


def test_content_parts_are_joined_and_params_merge():
    parts = {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"text": "b"}]}
    payload = {"choices": [{"message": parts, "finish_reason": "length"}]}
    with (
        ChatServer(lambda body, call: (200, payload, 0.0)) as srv,
        ChatClient(_cfg(srv, params={"temperature": 0.0, "max_tokens": 9})) as client,
    ):
        res = client.complete(_msgs("x"), {"max_tokens": 3, "top_k": 5})
    assert res.text == "ab" and res.finish_reason == "length" and res.usage == {}
    body = srv.bodies[0]
    assert body["temperature"] == 0.0 and body["max_tokens"] == 3 and body["top_k"] == 5
    assert body["messages"] == _msgs("x")


def test_map_chat_is_concurrent_and_keeps_order():
    active = peak = 0
    lock = threading.Lock()

    def behaviour(body, call):
        nonlocal active, peak
        i = int(body["messages"][-1]["content"].split()[-1])
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05 * (8 - i))  # later requests finish first
        with lock:
            active -= 1
        return 200, completion(f"reply {i}"), 0.0

    reqs = [_msgs(f"item {i}") for i in range(8)]
    with ChatServer(behaviour) as srv, ChatClient(_cfg(srv, concurrency=4)) as client:
        t0 = time.perf_counter()
        texts = client.map_chat(reqs)
        elapsed = time.perf_counter() - t0
    assert texts == [f"reply {i}" for i in range(8)]
    assert 3 <= peak <= 4  # bounded by concurrency, and really parallel
    assert elapsed < 0.05 * sum(range(1, 9))  # faster than one at a time (1.8 s)


def test_map_complete_failures_in_place_or_raised():
    def behaviour(body, call):
        text = body["messages"][-1]["content"]
        return (400, {"error": "bad"}, 0.0) if text == "bad" else (200, completion(text), 0.0)

    reqs = [ChatRequest(_msgs("one"), label="s1"), _msgs("bad"), ChatRequest(_msgs("three"))]
    with ChatServer(behaviour) as srv, ChatClient(_cfg(srv, concurrency=3)) as client:
        out = client.map_complete(reqs, return_exceptions=True)
        assert [type(o) for o in out] == [ChatResponse, ChatError, ChatResponse]
        assert out[0].text == "one" and out[2].text == "three" and out[1].status == 400
        with pytest.raises(ChatError, match="HTTP 400"):
            client.map_chat(reqs)
        assert client.map_chat([]) == []


def test_key_is_sent_but_never_logged_shown_or_put_in_errors(monkeypatch, caplog):
    monkeypatch.setenv("TAG_CHAT_TEST_KEY", KEY)

    def behaviour(body, call):
        if call == 0:  # a retried error, logged as a warning
            return 500, {"error": "oops"}, 0.0
        return 401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}, 0.0

    caplog.set_level(logging.DEBUG)  # everything: tag_model.chat, httpx, httpcore
    with ChatServer(behaviour) as srv:
        cfg = _cfg(srv, api_key_env="TAG_CHAT_TEST_KEY", max_retries=2)
        with ChatClient(cfg) as client, pytest.raises(ChatError) as ei:
            client.chat(_msgs("hi"))
        shown = [repr(client), repr(cfg), str(ei.value), repr(ei.value), ei.value.detail]
    assert all(h["Authorization"] == f"Bearer {KEY}" for h in srv.headers)
    assert ei.value.status == 401 and "***" in ei.value.detail  # the echoed key is masked
    assert caplog.text and "retry 1/2" in caplog.text
    for text in [*shown, caplog.text]:
        assert KEY not in text
        assert "sk-very" not in text


def test_image_data_url_roundtrip():
    img = Image.new("RGBA", (20, 12), (200, 10, 30, 128))
    url = image_data_url(img)
    assert url.startswith("data:image/png;base64,")
    back = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert back.size == (20, 12) and back.mode == "RGB"
    assert back.getpixel((3, 3)) == (200, 10, 30)
    assert image_data_url(img, "JPEG").startswith("data:image/jpeg;base64,/9j/")


def test_encoded_data_url_sends_the_file_as_it_is():
    img = Image.new("RGB", (20, 12), (200, 10, 30))
    for fmt, mime in (("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp")):
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        url = encoded_data_url(buf.getvalue())
        assert url == f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode()
    gif = io.BytesIO()
    img.save(gif, format="GIF")
    assert encoded_data_url(gif.getvalue()) is None
    assert encoded_data_url(b"") is None


def test_connections_are_reused_and_closed():
    behaviour = lambda body, call: (200, completion("ok"), 0.01)  # noqa: E731
    with ChatServer(behaviour) as srv:
        client = ChatClient(_cfg(srv, concurrency=4))
        for _ in range(3):
            assert client.map_chat([_msgs(f"q{k}") for k in range(8)]) == ["ok"] * 8
        assert len(srv.requests) == 24
        assert 1 <= len(client._clients) <= 4  # one per request in flight, then reused
        client.close()
        assert client._clients == []
        with pytest.raises(RuntimeError, match="closed"):
            client.chat(_msgs("late"))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout": 0}, "timeout"),
        ({"backoff": -1.0}, "backoff"),
    ],
)
def test_bad_config_is_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        ChatConfig("http://127.0.0.1:1/v1", "m", **kw)
