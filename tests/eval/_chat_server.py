"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for judge tests.

It speaks ``POST /v1/chat/completions`` over HTTP (``http.server`` in a thread) and answers
as a judge would, according to ``server.mode``:

- ``"content"``: prefers the explanation naming more AUs (position-independent), ties when
  equal — what a sane judge does;
- ``"position"``: always answers "A" (a maximally position-biased judge);
- ``"garbage"``: replies with text that holds no JSON verdict;
- ``"unauthorized"``: HTTP 401;
- ``"slow"``: waits 3 s before answering (to exercise the client's timeout).

``server.fail_first`` makes the first N requests answer HTTP 503 (to exercise retries).
Every request's headers and body are kept in ``server.requests``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_EXPL = re.compile(r"Explanation A:\n(.*)\n\nExplanation B:\n(.*)\n\nWhich", re.DOTALL)


def _count_aus(text: str) -> int:
    return len(re.findall(r"\bAU\d+\b", text.split("(Boxes in image pixels")[0]))


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(n))
        srv = self.server
        with srv.lock:
            srv.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            count = len(srv.requests)
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        if count <= srv.fail_first:
            self._send(503, {"error": {"message": "overloaded"}})
            return
        if srv.mode == "slow":
            time.sleep(3)
        if srv.mode == "unauthorized":
            self._send(401, {"error": {"message": "bad key"}})
            return
        user = body["messages"][-1]["content"]
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
        self._send(
            200,
            {
                "id": f"chatcmpl-{count}",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "content"
        self.fail_first = 0
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ChatServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
