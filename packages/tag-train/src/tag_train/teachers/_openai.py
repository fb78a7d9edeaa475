"""OpenAI-compatible chat-completions teacher (vLLM, TGI, SGLang, llama.cpp, OpenAI...)."""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from PIL import Image

from tag_train.teachers._base import TeacherReply, TeacherRequest

__all__ = ["OpenAITeacher", "image_data_url"]

logger = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def image_data_url(image: Image.Image, fmt: str = "PNG") -> str:
    """Encode a PIL image as a ``data:image/...;base64,`` URL (OpenAI ``image_url`` part)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format=fmt)
    mime = "jpeg" if fmt.upper() in ("JPG", "JPEG") else fmt.lower()
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAITeacher:
    """Teacher that calls an OpenAI-compatible ``POST {base_url}/chat/completions`` endpoint.

    Args:
        base_url: e.g. ``http://localhost:8000/v1`` (a ``vllm serve`` endpoint).
        model: the served model name.
        api_key_env: name of the environment variable holding the API key. The key itself is
            read at request time, sent as ``Authorization: Bearer ...`` and never logged or
            stored in metadata. An unset variable sends no header (fine for local servers).
        concurrency: requests in flight at once (a thread pool).
        timeout: seconds per HTTP request (connect + read).
        max_retries: retries after the first try on 408/409/425/429/5xx, timeouts and
            connection errors; other 4xx fail at once.
        backoff: base delay in seconds; the n-th retry waits ``backoff * 2**n`` (plus up to
            10 % jitter), capped at ``max_backoff``, or the server's ``Retry-After`` if larger.
        temperature, max_tokens, extra_body: passed in the request body.

    A request that still fails after the retries returns ``TeacherReply("", meta={"error": ...})``.
    """

    uses_gold_label = False

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        temperature: float = 0.7,
        max_tokens: int = 1024,
        image_format: str = "PNG",
        extra_body: dict[str, Any] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{model}"
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.image_format = image_format
        self.extra_body = dict(extra_body or {})
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    def __repr__(self) -> str:  # never shows the key
        return (
            f"OpenAITeacher(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency})"
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAITeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- protocol -----------------------------------------------------------------------------

    def build_body(self, request: TeacherRequest) -> dict[str, Any]:
        """The JSON body sent for one request (image as a base64 data URL content part)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": request.system},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": image_data_url(request.image, self.image_format)},
                        },
                        {"type": "text", "text": request.user},
                    ],
                },
            ],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        body.update(self.extra_body)
        return body

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherReply]:
        if not requests:
            return []
        if self.concurrency == 1 or len(requests) == 1:
            return [self._one(r) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))

    # -- internals ----------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.max_backoff, self.backoff * (2**attempt))
        delay *= 1.0 + 0.1 * random.random()
        if retry_after:
            with contextlib.suppress(ValueError):
                delay = max(delay, min(self.max_backoff, float(retry_after)))
        return delay

    def _one(self, request: TeacherRequest) -> TeacherReply:
        url = f"{self.base_url}/chat/completions"
        body = self.build_body(request)
        meta: dict[str, Any] = {"teacher": self.name, "model": self.model, "http_retries": 0}
        t0 = time.perf_counter()
        last_error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                resp = self._client.post(url, json=body, headers=self._headers())
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    return self._parse(resp, meta, t0)
                last_error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code not in _RETRY_STATUS:
                    break
                retry_after = resp.headers.get("retry-after")
            if attempt < self.max_retries:
                meta["http_retries"] += 1
                delay = self._delay(attempt, retry_after)
                logger.warning(
                    "teacher %s: %s on sample %s; retry %d/%d in %.2fs",
                    self.name,
                    last_error,
                    request.sample_id,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
        meta["error"] = last_error
        meta["latency_s"] = time.perf_counter() - t0
        return TeacherReply("", meta)

    def _parse(self, resp: httpx.Response, meta: dict[str, Any], t0: float) -> TeacherReply:
        meta["latency_s"] = time.perf_counter() - t0
        try:
            data = resp.json()
            choice = data["choices"][0]
            content = choice["message"]["content"]
            if isinstance(content, list):  # some servers return content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            meta["finish_reason"] = choice.get("finish_reason")
            usage = data.get("usage") or {}
            meta["prompt_tokens"] = usage.get("prompt_tokens")
            meta["completion_tokens"] = usage.get("completion_tokens")
            return TeacherReply(str(content or ""), meta)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            meta["error"] = f"malformed response: {type(exc).__name__}: {exc}"
            return TeacherReply("", meta)
