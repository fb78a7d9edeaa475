"""One OpenAI-compatible ``/chat/completions`` client over httpx (retries, backoff, concurrency)."""

from __future__ import annotations

import base64
import contextlib
import email.utils
import io
import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, overload

import httpx
from PIL import Image

logger = logging.getLogger("tag_model.chat")

#: Non-200 statuses worth another try; every other 4xx fails at once.
RETRY_STATUS = frozenset({408, 409, 425, 429})

Messages = list[dict[str, Any]]


def image_data_url(image: Image.Image, fmt: str = "PNG") -> str:
    """Encode a PIL image as a ``data:image/...;base64,`` URL (an OpenAI ``image_url`` part).

    The image is converted to RGB first; ``fmt`` is any PIL format name (``PNG``, ``JPEG``...).
    """
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format=fmt)
    mime = "jpeg" if fmt.upper() in ("JPG", "JPEG") else fmt.lower()
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def encoded_data_url(data: bytes) -> str | None:
    """The ``data:`` URL of an already encoded image file, sent as it is (no re-encoding), or
    ``None`` when ``data`` is not a PNG, JPEG or WEBP file.

    Re-encoding costs far more than base64 (about 2 ms for a 112-px PNG at zlib level 1,
    against microseconds), so a trace build sends the dataset's own image files when they
    show exactly the decoded image.

    >>> encoded_data_url(bytes.fromhex("ffd8ffe0") + b" rest of a JPEG")[:23]
    'data:image/jpeg;base64,'
    >>> encoded_data_url(b"GIF89a...") is None
    True
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        mime = "image/png"
    elif data.startswith(b"\xff\xd8\xff"):
        mime = "image/jpeg"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
    else:
        return None
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


class ChatError(RuntimeError):
    """A chat completion failed (after its retries, or at once for a refused request).

    Attributes:
        url: the endpoint (``{base_url}/chat/completions``).
        status: the last HTTP status, or ``None`` when no response came (timeout, connection).
        attempts: how many HTTP requests were made.
        detail: what went wrong last (``"HTTP 503: ..."``, ``"ReadTimeout: ..."``...).
        latency_s: seconds from the first try to giving up.

    The message names the URL and status, never the API key.
    """

    def __init__(
        self,
        url: str,
        detail: str,
        *,
        status: int | None = None,
        attempts: int = 1,
        retryable: bool = True,
        latency_s: float = 0.0,
    ) -> None:
        self.url = url
        self.detail = detail
        self.status = status
        self.attempts = attempts
        self.latency_s = latency_s
        if retryable:
            msg = f"chat completion at {url} failed after {attempts} attempts: {detail}"
        else:
            msg = f"chat completion at {url} refused the request: {detail}"
        super().__init__(msg)

    @property
    def retries(self) -> int:
        """Retries made after the first try."""
        return max(self.attempts - 1, 0)


@dataclass(frozen=True)
class ChatConfig:
    """Where and how to reach an OpenAI-compatible endpoint.

    Args:
        base_url: the API root, e.g. ``http://localhost:8000/v1`` (a ``vllm serve`` endpoint);
            requests go to ``{base_url}/chat/completions``.
        model: the served model name (the body's ``model``).
        api_key_env: name of the environment variable holding the API key. The key is read
            at request time, sent as ``Authorization: Bearer ...`` and never stored, logged
            or put in an error. ``None`` or an unset variable sends no header (local servers).
        timeout: seconds per HTTP request (connect, read, write, pool).
        max_retries: retries after the first try on HTTP 408/409/425/429/5xx, timeouts and
            connection errors (and, with ``retry_malformed``, on an unreadable 200 body);
            other 4xx fail at once.
        backoff: base delay in seconds; retry ``n`` (0-based) waits ``backoff * 2**n`` plus
            up to 10 % jitter, capped at ``max_backoff``, or the server's ``Retry-After``
            (seconds or HTTP date; ``retry-after-ms`` too) when larger, also capped.
        max_backoff: the longest wait between two tries.
        concurrency: requests in flight at once in :meth:`ChatClient.map_complete`.
        params: body fields sent with every request (``temperature``, ``max_tokens``,
            vendor extras); per-request params override them.
        retry_malformed: also retry a 200 whose body is not a chat completion.
    """

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout: float = 60.0
    max_retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 60.0
    concurrency: int = 8
    params: Mapping[str, Any] = field(default_factory=dict)
    retry_malformed: bool = False

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(
                f"backoff and max_backoff must be >= 0, got {self.backoff}, {self.max_backoff}"
            )

    @property
    def url(self) -> str:
        """The ``chat/completions`` endpoint."""
        return self.base_url.rstrip("/") + "/chat/completions"


@dataclass
class ChatRequest:
    """One request for :meth:`ChatClient.map_complete`: messages, body params, a log label."""

    messages: Messages
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None


@dataclass
class ChatResponse:
    """A parsed chat completion.

    ``text`` is the first choice's content (content-part lists joined), ``raw`` the decoded
    JSON body, ``retries`` the retries it took, ``latency_s`` the time from first try to answer.
    """

    text: str
    raw: dict[str, Any]
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    latency_s: float = 0.0


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asks us to wait (``retry-after-ms``, ``retry-after``), if any."""
    ms = headers.get("retry-after-ms")
    if ms:
        with contextlib.suppress(ValueError):
            return max(float(ms) / 1000.0, 0.0)
    value = headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(float(value), 0.0)
    with contextlib.suppress(TypeError, ValueError, IndexError):
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max((when - datetime.now(UTC)).total_seconds(), 0.0)
    return None


def _parse(data: Any) -> tuple[str, str | None, dict[str, Any]]:
    choice = data["choices"][0]
    content = choice["message"]["content"]
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    usage = data.get("usage") or {}
    return str(content or ""), choice.get("finish_reason"), dict(usage)


class ChatClient:
    """OpenAI-compatible chat-completions client: retries with backoff, bounded concurrency.

    Thread-safe. Each request borrows an idle one-connection :class:`httpx.Client` (a new one
    when all are busy) and returns it, so a connection is reused across requests and no two
    threads contend for one connection pool: httpcore's pool scans every connection under one
    lock for each request, which at 32 threads cost a fifth of a trace build's CPU. With a
    ``transport`` (tests, proxies) one client shares it. Use as a context manager or call
    :meth:`close`.

    >>> cfg = ChatConfig("http://localhost:8000/v1", "qwen", api_key_env="MY_KEY")
    >>> ChatClient(cfg)  # doctest: +ELLIPSIS
    ChatClient(url='http://localhost:8000/v1/chat/completions', model='qwen', api_key_env='MY_KEY', ...)
    """

    def __init__(self, config: ChatConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self._transport = transport
        self._pool_lock = threading.Lock()
        self._idle: list[httpx.Client] = []
        self._clients: list[httpx.Client] = []
        self._closed = False
        self._ssl: ssl.SSLContext | None = None
        if transport is not None:  # the transport pools; one client shares it
            self._clients.append(self._new_client())
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    def __repr__(self) -> str:  # names the env var, never the key
        c = self.config
        return (
            f"ChatClient(url={c.url!r}, model={c.model!r}, api_key_env={c.api_key_env!r}, "
            f"concurrency={c.concurrency}, max_retries={c.max_retries})"
        )

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            clients, self._clients, self._idle = self._clients, [], []
        for c in clients:
            c.close()

    def _new_client(self) -> httpx.Client:
        if self._transport is not None:  # the transport holds its own TLS settings
            return httpx.Client(
                timeout=httpx.Timeout(self.config.timeout), transport=self._transport
            )
        if self._ssl is None:  # building one costs ~60 ms (it loads the CA bundle): share it
            self._ssl = httpx.create_ssl_context()
        return httpx.Client(
            timeout=httpx.Timeout(self.config.timeout),
            verify=self._ssl,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    @contextlib.contextmanager
    def _lease(self) -> Iterator[httpx.Client]:
        """An httpx client for one request: an idle one, else a new one (kept for reuse)."""
        if self._transport is not None:
            yield self._clients[0]
            return
        with self._pool_lock:
            if self._closed:
                raise RuntimeError("ChatClient is closed")
            client = self._idle.pop() if self._idle else None
            if client is None:
                client = self._new_client()
                self._clients.append(client)
        try:
            yield client
        finally:
            with self._pool_lock:
                if not self._closed:
                    self._idle.append(client)

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public --------------------------------------------------------------------------------

    def body(self, messages: Messages, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The JSON body sent: ``model``, ``messages``, then config params, then ``params``."""
        return {
            "model": self.config.model,
            "messages": messages,
            **self.config.params,
            **(params or {}),
        }

    def chat(self, messages: Messages, **params: Any) -> str:
        """POST one chat completion; the first choice's text. Raises :class:`ChatError`."""
        return self.complete(messages, params).text

    def complete(
        self,
        messages: Messages,
        params: Mapping[str, Any] | None = None,
        *,
        label: str | None = None,
    ) -> ChatResponse:
        """POST one chat completion with retries; the parsed response.

        ``params`` are extra body fields (``temperature``...); ``label`` names the request in
        retry log lines. Raises :class:`ChatError` when it fails.
        """
        cfg = self.config
        url = cfg.url
        body = self.body(messages, params)
        t0 = time.perf_counter()
        detail = "no attempt made"
        status: int | None = None
        attempt = 0
        for attempt in range(cfg.max_retries + 1):
            retry_after = None
            try:
                with self._lease() as client:
                    resp = client.post(url, json=body, headers=self._headers())
            except httpx.TransportError as exc:  # timeouts, connection errors
                status, detail = None, f"{type(exc).__name__}: {exc}"
            else:
                status = resp.status_code
                if status == 200:
                    try:
                        data = resp.json()
                        text, finish, usage = _parse(data)
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                        detail = (
                            f"HTTP 200 with a malformed response: {type(exc).__name__}: {exc}: "
                            f"{self._scrub(resp.text[:200])}"
                        )
                        if not cfg.retry_malformed:
                            break
                    else:
                        return ChatResponse(
                            text, data, finish, usage, attempt, time.perf_counter() - t0
                        )
                else:
                    detail = f"HTTP {status}: {self._scrub(resp.text[:200])}"
                    if status not in RETRY_STATUS and status < 500:
                        raise ChatError(
                            url,
                            detail,
                            status=status,
                            attempts=attempt + 1,
                            retryable=False,
                            latency_s=time.perf_counter() - t0,
                        )
                    retry_after = _retry_after(resp.headers)
            if attempt < cfg.max_retries:
                delay = self._delay(attempt, retry_after)
                logger.warning(
                    "chat %s%s: %s; retry %d/%d in %.2fs",
                    url,
                    f" ({label})" if label else "",
                    detail,
                    attempt + 1,
                    cfg.max_retries,
                    delay,
                )
                time.sleep(delay)
        raise ChatError(
            url,
            detail,
            status=status,
            attempts=attempt + 1,
            latency_s=time.perf_counter() - t0,
        )

    @overload
    def map_complete(
        self,
        requests: Sequence[ChatRequest | Messages],
        *,
        return_exceptions: Literal[False] = ...,
    ) -> list[ChatResponse]: ...

    @overload
    def map_complete(
        self,
        requests: Sequence[ChatRequest | Messages],
        *,
        return_exceptions: Literal[True],
    ) -> list[ChatResponse | ChatError]: ...

    def map_complete(
        self,
        requests: Sequence[ChatRequest | Messages],
        *,
        return_exceptions: bool = False,
    ) -> list[ChatResponse] | list[ChatResponse | ChatError]:
        """:meth:`complete` for each request, up to ``config.concurrency`` at once, in order.

        Each item is a :class:`ChatRequest` or a bare messages list. With
        ``return_exceptions`` a failed request gives its :class:`ChatError` in its place;
        otherwise the first failure (in request order) is raised after all have finished.
        """
        reqs = [r if isinstance(r, ChatRequest) else ChatRequest(list(r)) for r in requests]

        def one(r: ChatRequest) -> ChatResponse | ChatError:
            try:
                return self.complete(r.messages, r.params, label=r.label)
            except ChatError as exc:
                return exc

        workers = min(self.config.concurrency, len(reqs))
        if workers <= 1:
            out = [one(r) for r in reqs]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chat") as pool:
                out = list(pool.map(one, reqs))
        if not return_exceptions:
            for o in out:
                if isinstance(o, ChatError):
                    raise o
        return out

    def map_chat(self, requests: Sequence[ChatRequest | Messages]) -> list[str]:
        """The texts of :meth:`map_complete` (bounded concurrency, request order)."""
        return [r.text for r in self.map_complete(requests)]

    # -- internals -----------------------------------------------------------------------------

    def _key(self) -> str | None:
        env = self.config.api_key_env
        return (os.environ.get(env) or None) if env else None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _scrub(self, text: str) -> str:
        """Server text with the API key masked (some servers echo a bad key back)."""
        key = self._key()
        return text.replace(key, "***") if key else text

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        with self._rng_lock:
            jitter = 1.0 + 0.1 * self._rng.random()
        delay = min(cfg.max_backoff, cfg.backoff * (2**attempt) * jitter)
        if retry_after is not None:
            delay = max(delay, min(cfg.max_backoff, retry_after))
        return delay
