"""What a served index needs besides search: API keys, a bounded query queue, and metrics.

- :class:`ApiKeys` (``mcip serve --api-key-file FILE``): every route except the search page and its static
  files needs ``Authorization: Bearer KEY`` with one of the file's keys (one per line, so a key can be
  rotated by listing old and new for a while); compared in constant time (``hmac.compare_digest`` against
  every key, no early exit); 401 with ``WWW-Authenticate: Bearer`` otherwise, for every method, answered
  from the headers alone (the body is never read) and with ``Connection: close``, so a client without a
  key cannot hold a connection by trickling a body. The page asks for the key once and keeps it for the
  browser session. :func:`read_api_keys` refuses a key file that group or others may read (as ssh does
  with a private key) unless told otherwise.
- :class:`QueryGate`: searches run at most ``concurrency`` at a time; up to ``max_waiting`` more wait,
  each at most ``wait_timeout_s`` seconds; beyond that a request gets 503 with ``Retry-After`` at once
  (a burst is refused quickly instead of piling up threads and memory). Uploads have a gate of their own,
  so text and id queries never wait behind them.
- :class:`Metrics` (``GET /metrics``, the Prometheus text format 0.0.4): requests by method (the HTTP
  methods, anything else counted as ``other``), route and status, a latency histogram by route, queries
  and uploads running and waiting; requests refused for want of a key are one unlabelled counter, so no
  client without a key can add series.
- :class:`HeadAsGet`: ``HEAD`` on a ``GET`` route is answered as ``GET`` without the body.
"""

from __future__ import annotations

import contextlib
import hmac
import math
import os
import stat
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mcip.errors import ConfigError

T = TypeVar("T")
PUBLIC_PATHS = ("/", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RETRY_AFTER_S = 1
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")


def method_label(method: str) -> str:
    """The metrics label of an HTTP method: one of :data:`METHODS`, else ``other`` (a bounded set)."""
    return method if method in METHODS else "other"


def _check_private(path: Path, allow_shared: bool) -> None:
    """Refuse (or with ``allow_shared`` only warn about) a key file that group or others may read."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # reading it fails next, with the reason
    if not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return
    message = (
        f"The API-key file {path} can be read by other users (permissions {stat.filemode(mode)[1:]}); "
        f"make it private with: chmod 600 {path}"
    )
    if not allow_shared:
        raise ConfigError(message + " (or pass --allow-shared-key-file to accept it).")
    warnings.warn(message + ".", stacklevel=3)


def read_api_keys(path: str | os.PathLike, allow_shared: bool = False) -> tuple[str, ...]:
    """The keys of an API-key file: one per line, blank lines and ``#`` comments ignored; at least one,
    each at least 16 characters (a short key can be guessed). The file must be UTF-8 and readable by its
    owner only (``chmod 600``); ``allow_shared`` accepts a file that group or others may read, warning."""
    path = Path(path)
    _check_private(path, allow_shared)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read the API-key file {path}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"The API-key file {path} is not UTF-8 text (byte {exc.start}); write one key per line, "
            "e.g. from `openssl rand -hex 24`."
        ) from None
    keys = tuple(k for line in text.splitlines() if (k := line.strip()) and not k.startswith("#"))
    if not keys:
        raise ConfigError(
            f"{path} holds no API key; write one key per line (e.g. from `openssl rand -hex 24`)."
        )
    short = [k for k in keys if len(k) < 16]
    if short:
        raise ConfigError(f"{path}: every API key needs at least 16 characters ({len(short)} shorter).")
    return keys


class ApiKeys:
    """ASGI middleware: Bearer-key authentication for every route but the page (see the module docstring)."""

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError("ApiKeys needs at least one key.")
        self.app = app
        self.keys = tuple(k.encode() for k in keys)

    def _allowed(self, header: bytes) -> bool:
        scheme, _, token = header.partition(b" ")
        ok = False
        for key in self.keys:  # every key compared: the time does not tell which one nearly matched
            ok |= hmac.compare_digest(token.strip(), key)
        return scheme.lower() == b"bearer" and ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers", [])).get(b"authorization", b"")
        if not self._allowed(header):
            response = JSONResponse(  # from the headers alone: the body is never read
                {"detail": "This server needs an API key: send the header 'Authorization: Bearer KEY'."},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer", "Connection": "close"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class QueryGate:
    """Bounded concurrency and a bounded wait for searches (see the module docstring)."""

    def __init__(self, concurrency: int = 8, max_waiting: int = 64, wait_timeout_s: float = 10.0) -> None:
        if concurrency < 1 or max_waiting < 0 or not wait_timeout_s > 0:
            raise ConfigError(
                "The query queue needs concurrency >= 1, max_waiting >= 0 and a positive wait timeout; got "
                f"{concurrency}, {max_waiting}, {wait_timeout_s}."
            )
        self.concurrency, self.max_waiting, self.wait_timeout_s = concurrency, max_waiting, wait_timeout_s
        self.running = 0
        self.waiting = 0
        self.refused = 0
        self._limiter: anyio.CapacityLimiter | None = None

    def _busy(self, why: str) -> HTTPException:
        self.refused += 1
        return HTTPException(
            503,
            f"The server is busy ({why}); retry in {RETRY_AFTER_S} s.",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    @contextlib.asynccontextmanager
    async def slot(self):
        """Hold one query slot; 503 at once when the queue is full, or after ``wait_timeout_s``."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.concurrency)
        if self.running >= self.concurrency and self.waiting >= self.max_waiting:
            raise self._busy(f"{self.running} queries running and {self.waiting} waiting")
        self.waiting += 1
        try:
            with anyio.move_on_after(self.wait_timeout_s) as scope:
                await self._limiter.acquire()
        finally:
            self.waiting -= 1
        if scope.cancelled_caught:
            raise self._busy(f"no query slot within {self.wait_timeout_s:g} s")
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._limiter.release()

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` in a worker thread within a slot (see :meth:`slot`)."""
        async with self.slot():
            return await anyio.to_thread.run_sync(work)


class Metrics:
    """Request counts and latencies per route, and the gates' queues (Prometheus text format)."""

    def __init__(self, gate: QueryGate | None = None, upload_gate: QueryGate | None = None) -> None:
        self.gate, self.upload_gate = gate, upload_gate
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, list[int]] = {}  # route -> counts per bucket (+Inf last)
        self.latency_sum: dict[str, float] = {}
        self.unauthorized = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count a request: ``method`` is labelled as :func:`method_label` says; a 401 (no valid API key)
        only adds to the unlabelled ``mcip_unauthorized_requests_total``."""
        with self._lock:
            if status == 401:
                self.unauthorized += 1
                return
            key = (method_label(method), route, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            buckets = self.latency.setdefault(route, [0] * (len(LATENCY_BUCKETS) + 1))
            for i, bound in enumerate((*LATENCY_BUCKETS, math.inf)):
                if seconds <= bound:
                    buckets[i] += 1
            self.latency_sum[route] = self.latency_sum.get(route, 0.0) + seconds

    def render(self) -> str:
        lines = [
            "# HELP mcip_requests_total HTTP requests by method, route and status.",
            "# TYPE mcip_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), n in sorted(self.requests.items()):
                lines.append(
                    f'mcip_requests_total{{method="{method}",route="{_esc(route)}",status="{status}"}} {n}'
                )
            lines += [
                "# HELP mcip_request_duration_seconds Time to answer a request, by route.",
                "# TYPE mcip_request_duration_seconds histogram",
            ]
            for route, counts in sorted(self.latency.items()):
                r = _esc(route)
                for bound, n in zip((*LATENCY_BUCKETS, math.inf), counts, strict=True):
                    le = "+Inf" if bound == math.inf else f"{bound:g}"
                    lines.append(f'mcip_request_duration_seconds_bucket{{route="{r}",le="{le}"}} {n}')
                lines.append(
                    f'mcip_request_duration_seconds_sum{{route="{r}"}} {self.latency_sum[route]:.6f}'
                )
                lines.append(f'mcip_request_duration_seconds_count{{route="{r}"}} {counts[-1]}')
            lines += [
                "# HELP mcip_unauthorized_requests_total Requests refused with 401 (no valid API key).",
                "# TYPE mcip_unauthorized_requests_total counter",
                f"mcip_unauthorized_requests_total {self.unauthorized}",
            ]
        for name, gate, what in (
            ("queries", self.gate, "Searches"),
            ("uploads", self.upload_gate, "Uploads"),
        ):
            if gate is not None:
                lines += _gate_lines(name, gate, what)
        return "\n".join(lines) + "\n"

    def response(self) -> PlainTextResponse:
        return PlainTextResponse(self.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _gate_lines(name: str, gate: QueryGate, what: str) -> list[str]:
    return [
        f"# HELP mcip_{name}_running {what} running now.",
        f"# TYPE mcip_{name}_running gauge",
        f"mcip_{name}_running {gate.running}",
        f"# HELP mcip_{name}_waiting {what} waiting for a slot now.",
        f"# TYPE mcip_{name}_waiting gauge",
        f"mcip_{name}_waiting {gate.waiting}",
        f"# HELP mcip_{name}_refused_total {what} refused with 503 (queue full or wait too long).",
        f"# TYPE mcip_{name}_refused_total counter",
        f"mcip_{name}_refused_total {gate.refused}",
    ]


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsMiddleware:
    """ASGI middleware timing every HTTP request into :class:`Metrics` (route: the matched path template,
    so ``/images/{image_id:path}`` is one series, not one per image)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = {"code": 500, "done": False}

        def observe() -> None:
            if not state["done"]:
                state["done"] = True
                route = getattr(scope.get("route"), "path", None) or (
                    "/static" if scope.get("path", "").startswith("/static/") else "other"
                )
                self.metrics.observe(
                    scope.get("method", "?"), route, state["code"], time.perf_counter() - start
                )

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                state["code"] = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                observe()  # before the last byte leaves: a client's next request sees this one counted
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            observe()


class HeadAsGet:
    """ASGI middleware: ``HEAD`` is answered as ``GET`` (status and headers, ``Content-Length`` included)
    without the body, as HTTP requires; FastAPI's ``GET`` routes would otherwise answer 405."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the body's parts are dropped; the last (empty) one ends the response
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
