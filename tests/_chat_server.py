"""A small but real OpenAI-compatible chat-completions server on 127.0.0.1 for client tests.

It speaks ``POST /v1/chat/completions`` over HTTP (``http.server``, one thread per request).
Use it as a context manager (``with ChatServer(...) as srv``) or with ``start()``/``stop()``.

How it answers:

- with a ``behaviour(body, call) -> (status, payload, delay_s[, headers])``: whatever that
  returns, ``delay_s`` after the request arrived (the server's own parsing and the
  behaviour's work are inside that time, as a real server's latency would be, so a busy
  test process does not add its queueing to every reply). ``call`` counts earlier requests
  with the same *key* (the last message's last text), so "fail the first try of every
  sample" is easy. Build payloads with :func:`completion`.
- without one, as an LLM judge would, according to ``srv.mode``:

  - ``"content"``: prefers the explanation naming more AUs (position-independent), ties when
    equal, what a sane judge does;
  - ``"position"``: always answers "A" (a maximally position-biased judge);
  - ``"garbage"``: replies with text that holds no JSON verdict;
  - ``"unauthorized"``: HTTP 401;
  - ``"slow"``: waits 3 s before answering (to exercise the client's timeout).

``srv.fail_first`` makes the first N requests answer HTTP 503 in either case (retries).

A behaviour may also return status ``"drop"`` (the connection is closed with no response) or
a ``bytes`` payload (sent as is: a truncated body). :func:`template_behaviour` answers a
trace-building request as the offline template teacher would (the "template-teacher
protocol": the activated list, labels and eliminated labels are read back from the prompt).
Every request is kept in ``srv.requests`` as ``{"path", "headers", "body"}``; ``srv.bodies``
and ``srv.headers`` are the same, one field each.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "AsyncChatServer",
    "Behaviour",
    "ChatServer",
    "completion",
    "template_behaviour",
    "template_reply",
]

#: (request body, call number for this key) -> (status, payload, delay_s[, extra headers])
Behaviour = Callable[[dict[str, Any], int], tuple[Any, ...]]

_EXPL = re.compile(r"Explanation A:\n(.*)\n\nExplanation B:\n(.*)\n\nWhich", re.DOTALL)


def completion(text: str, *, model: str | None = None, n: int = 0) -> dict[str, Any]:
    """A chat-completion response body whose first choice says ``text``."""
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


_ACT = re.compile(r"^- AU(\d+)[^:\n]*: p=([0-9.]+); \[(-?\d+),(-?\d+),(-?\d+),(-?\d+)\]$", re.M)
_LABELS = re.compile(r"^Possible answers: (.*)\.$", re.M)
_ELIM = re.compile(r"do not give them: (.*)\.$", re.M)


def template_reply(body: dict[str, Any]) -> str:
    """The trace the template teacher (``answer="prototype"``) writes for a trace-building
    request, read back from the request's user prompt.

    Deterministic in the prompt and image: the sample id is a hash of the image part and the
    attempt is the number of eliminated labels, so a rerun gets the same trace.
    """
    import hashlib

    from tag_train.teachers import ActivatedEntry, TeacherRequest, TemplateTeacher

    text = _last_text(body)
    content = body["messages"][-1]["content"]
    image = next(
        (p["image_url"]["url"] for p in content if isinstance(p, dict) and "image_url" in p), ""
    )
    entries = tuple(
        ActivatedEntry(
            au=int(m.group(1)),
            prob=float(m.group(2)),
            box=tuple(float(m.group(k)) for k in range(3, 7)),  # type: ignore[arg-type]
            model_box=tuple(float(m.group(k)) for k in range(3, 7)),  # type: ignore[arg-type]
        )
        for m in _ACT.finditer(text)
    )
    lm = _LABELS.search(text)
    labels = tuple(x.strip() for x in lm.group(1).split(",")) if lm else ("neutral",)
    em = _ELIM.search(text)
    elim = tuple(x.strip() for x in em.group(1).split(",")) if em else ()
    sid = hashlib.blake2b(image.encode(), digest_size=8).hexdigest()
    req = TeacherRequest(
        sample_id=sid,
        image=None,  # type: ignore[arg-type]
        labels=labels,
        activated=entries,
        system="",
        user=text,
        eliminated=elim,
        attempt=len(elim),
        face_box=(100.0, 100.0, 900.0, 900.0),
    )
    return TemplateTeacher(answer="prototype", seed=0).write(req)


def template_behaviour(delay: float = 0.0) -> Behaviour:
    """A behaviour answering every request with :func:`template_reply` after ``delay`` s."""

    def behaviour(body: dict[str, Any], call: int) -> tuple[Any, ...]:
        return 200, completion(template_reply(body), model=body.get("model")), delay

    return behaviour


def _count_aus(text: str) -> int:
    return len(re.findall(r"\bAU\d+\b", text.split("(Boxes in image pixels")[0]))


def _last_text(body: dict[str, Any]) -> str:
    try:
        content = body["messages"][-1]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    if isinstance(content, str):
        return content
    texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return texts[-1] if texts else ""


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer
    protocol_version = "HTTP/1.1"  # keep-alive, as vLLM serves (every reply has a length)

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, code: Any, obj: Any, headers: dict[str, str] | None = None) -> None:
        if code == "drop":  # close the connection without a response
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    def do_POST(self) -> None:
        arrived = time.perf_counter()
        n = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(n))
        srv = self.server
        key = _last_text(body)
        with srv.lock:
            srv.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            count = len(srv.requests)
            call = srv.calls.get(key, 0)
            srv.calls[key] = call + 1
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        if count <= srv.fail_first:
            self._send(503, {"error": {"message": "overloaded"}})
            return
        if srv.behaviour is not None:
            status, payload, delay, *rest = srv.behaviour(body, call)
            if delay:
                time.sleep(max(0.0, delay - (time.perf_counter() - arrived)))
            self._send(status, payload, rest[0] if rest else None)
            return
        self._judge(body, count)

    def _judge(self, body: dict[str, Any], count: int) -> None:
        srv = self.server
        if srv.mode == "slow":
            time.sleep(3)
        if srv.mode == "unauthorized":
            self._send(401, {"error": {"message": "bad key"}})
            return
        user = body["messages"][-1]["content"]
        if isinstance(user, str):
            text = user
        else:
            text = "".join(p.get("text", "") for p in user if p.get("type") == "text")
        m = _EXPL.search(text)
        if srv.mode == "garbage" or m is None:
            reply = "I cannot decide, both are interesting."
        else:
            if srv.mode == "position":
                choice = "A"
            else:
                a, b = _count_aus(m.group(1)), _count_aus(m.group(2))
                choice = "A" if a > b else "B" if b > a else "tie"
            verdict = {
                "visual_faithfulness": choice,
                "anatomical_precision": choice,
                "logical_coherence": "tie",
                "rationale": "counted AUs",
            }
            reply = "Here is my verdict:\n```json\n" + json.dumps(verdict) + "\n```"
        self._send(200, completion(reply, model=body.get("model"), n=count))


class ChatServer(ThreadingHTTPServer):
    """Serves ``POST /v1/chat/completions`` on 127.0.0.1 (a free port); see the module doc."""

    daemon_threads = True
    #: the listen backlog. socketserver's default, 5, drops the SYNs of a client that opens
    #: dozens of connections at once (a trace build at concurrency 32), and each dropped one
    #: waits out TCP's 1 s retransmit; uvicorn (vLLM's server) listens with 2048.
    request_queue_size = 2048

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour = behaviour
        self.mode = "content"
        self.fail_first = 0
        self.requests: list[dict[str, Any]] = []
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The JSON body of every request, in arrival order."""
        with self.lock:
            return [r["body"] for r in self.requests]

    @property
    def headers(self) -> list[dict[str, str]]:
        """The headers of every request, in arrival order."""
        with self.lock:
            return [r["headers"] for r in self.requests]

    def start(self) -> ChatServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AsyncChatServer:
    """The same protocol and behaviours as :class:`ChatServer`, served by one asyncio event
    loop (as uvicorn serves vLLM) instead of a thread per connection. For throughput
    benchmarks: each reply leaves ``delay_s`` after its request was read. The threaded
    server's GIL queue added ~45 ms to every reply of a 32-request burst on two cores, which a
    benchmark would have charged to the client (measured with a trivial client: 0.245 s per
    0.2 s request, against 0.201 s here).

    ``serve(on_ready)`` runs it in the calling thread until the process ends; ``on_ready``
    gets the base URL. Requests are counted per key (``call``) but not stored.
    """

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.calls: dict[str, int] = {}

    async def _handle(self, reader: Any, writer: Any) -> None:
        import asyncio
        from http import HTTPStatus

        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                arrived = time.perf_counter()
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", 0))
                body = json.loads(await reader.readexactly(n)) if n else {}
                key = _last_text(body)
                call = self.calls.get(key, 0)
                self.calls[key] = call + 1
                status, payload, delay, *rest = self.behaviour(body, call)
                wait = delay - (time.perf_counter() - arrived)
                if wait > 0:
                    await asyncio.sleep(wait)
                if status == "drop":
                    return
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                extra = "".join(f"{k}: {v}\r\n" for k, v in (rest[0] if rest else {}).items())
                head = (
                    f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                    f"{extra}\r\n"
                )
                writer.write(head.encode("latin-1") + data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    def serve(self, on_ready: Callable[[str], None]) -> None:
        import asyncio

        async def main() -> None:
            srv = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=2048)
            on_ready(f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/v1")
            async with srv:
                await srv.serve_forever()

        asyncio.run(main())
