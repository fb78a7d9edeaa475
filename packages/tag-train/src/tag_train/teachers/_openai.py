"""OpenAI-compatible chat-completions teacher (vLLM, TGI, SGLang, llama.cpp, OpenAI...).

A thin user of :mod:`tag_model.chat`, which does the HTTP, retries and concurrency.
"""

from __future__ import annotations

import base64
import io
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import httpx
from tag_model.chat import (
    ChatClient,
    ChatConfig,
    ChatError,
    ChatRequest,
    encoded_data_url,
    image_data_url,
)

from tag_train.teachers._base import TeacherReply, TeacherRequest

__all__ = ["OpenAITeacher", "image_data_url"]


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
        image_format: how an image is encoded when it must be (``PNG`` or any PIL format).
            A request that carries its image file (``TeacherRequest.encoded_image``, a PNG,
            JPEG or WEBP that decodes to exactly the image; the trace builder sets it) sends
            that file as it is: lossless, and far cheaper than encoding again.
        transport: an optional :class:`httpx.BaseTransport` (tests, proxies).

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
        self.config = ChatConfig(
            base_url=base_url.rstrip("/"),
            model=model,
            api_key_env=api_key_env,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
            concurrency=concurrency,
        )
        self.name = f"openai:{model}"
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.image_format = image_format
        self.extra_body = dict(extra_body or {})
        self._client = ChatClient(self.config, transport=transport)
        self._urls: dict[int, str] = {}
        self._url_lock = threading.Lock()

    # read-only views of the connection settings (the names the teacher always had)
    @property
    def base_url(self) -> str:
        return self.config.base_url

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def api_key_env(self) -> str | None:
        return self.config.api_key_env

    @property
    def concurrency(self) -> int:
        return self.config.concurrency

    @property
    def timeout(self) -> float:
        return self.config.timeout

    @property
    def max_retries(self) -> int:
        return self.config.max_retries

    @property
    def backoff(self) -> float:
        return self.config.backoff

    @property
    def max_backoff(self) -> float:
        return self.config.max_backoff

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

    def _image_url(self, image: Any) -> str:
        """The image as a data URL, encoded once per image object (retries of a face reuse
        it). PNG is written with zlib level 1: still lossless, about half the CPU of the
        default level, which matters at tens of requests per second."""
        key = id(image)
        with self._url_lock:
            hit = self._urls.get(key)
        if hit is not None:
            return hit
        if self.image_format.upper() == "PNG":
            buf = io.BytesIO()
            image.convert("RGB").save(buf, format="PNG", compress_level=1)
            url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        else:
            url = image_data_url(image, self.image_format)
        with self._url_lock:
            self._urls[key] = url
        try:  # forget it when the image goes away (ids are reused)
            weakref.finalize(image, self._forget, key)
        except TypeError:  # not weak-referenceable: no cache
            with self._url_lock:
                self._urls.pop(key, None)
        return url

    def _request_image_url(self, request: TeacherRequest) -> str:
        """The request's image file sent as it is when it has one (``encoded_image``), else
        ``request.image`` encoded in ``image_format``."""
        if request.encoded_image is not None:
            url = encoded_data_url(request.encoded_image)
            if url is not None:
                return url
        return self._image_url(request.image)

    def _forget(self, key: int) -> None:
        with self._url_lock:
            self._urls.pop(key, None)

    def _messages(self, request: TeacherRequest) -> list[dict[str, Any]]:
        return [
            {"role": "system", "content": request.system},
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": self._request_image_url(request)},
                    },
                    {"type": "text", "text": request.user},
                ],
            },
        ]

    def _params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, **self.extra_body}

    def build_body(self, request: TeacherRequest) -> dict[str, Any]:
        """The JSON body sent for one request (image as a base64 data URL content part)."""
        return self._client.body(self._messages(request), self._params())

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherReply]:
        if not requests:
            return []
        params = self._params()
        results = self._client.map_complete(
            [ChatRequest(self._messages(r), params, f"sample {r.sample_id}") for r in requests],
            return_exceptions=True,
        )
        replies = []
        for res in results:
            meta: dict[str, Any] = {"teacher": self.name, "model": self.model}
            if isinstance(res, ChatError):
                meta.update(http_retries=res.retries, error=str(res), latency_s=res.latency_s)
                replies.append(TeacherReply("", meta))
                continue
            meta.update(
                http_retries=res.retries,
                latency_s=res.latency_s,
                finish_reason=res.finish_reason,
                prompt_tokens=res.usage.get("prompt_tokens"),
                completion_tokens=res.usage.get("completion_tokens"),
            )
            replies.append(TeacherReply(res.text, meta))
        return replies
