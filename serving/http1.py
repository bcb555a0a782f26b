"""A minimal HTTP/1.1 client for the model hot path: keep-alive connections to one origin.

Why not aiohttp or httpx: a model call is made once per agent step, and aiohttp spends ~0.12 ms
of CPU per request building its request and response objects (httpx 0.6 ms and more), against
a few hundredths of a millisecond here for the same exchange, measured on this machine against
the same loopback server (`bench/client_overhead.py`, `bench/loop_overhead.py`). At a few tenths
of a millisecond of CPU per step, that difference is a fifth of the step.

What is ours is only the connection pool and the request bytes. Answers are parsed by httptools
(llhttp, the parser of Node.js and of uvicorn): status line, headers, Content-Length and chunked
framing, interim 1xx answers and keep-alive are its job, not hand-written code here. What this
module does: one request at a time per connection, idle connections reused (last in, first
out), `http` and `https` (verified with the system's trust store), an answer the server ends by
closing the connection, and a request retried once on a fresh connection when a reused one turns
out to have been closed by the server before it answered anything. What it does not: HEAD,
redirects, proxies, cookies, compression (it never asks for any), HTTP/2, streaming. Failures
are `HttpFailure`s (or `OSError` from the socket); `serving.transport` maps them to serving
errors.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

MAX_HEAD_BYTES = 64 * 1024
"""A status line and headers larger than this are not a model server's answer."""


class HttpFailure(Exception):
    """The server's answer broke HTTP/1.1 framing, or the URL cannot be requested."""


class InvalidTarget(HttpFailure):
    """The URL cannot be requested (no http(s) scheme, no host, not ASCII)."""


class ConnectionClosed(HttpFailure):
    """The connection closed before the whole answer arrived."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered
        """Whether any byte of an answer had arrived (if not, a retry cannot duplicate it)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed URL: where to connect and what to put on the request line."""

    origin: tuple[str, str, int]
    """(scheme, host, port)."""
    path: bytes
    host_header: bytes

    @classmethod
    def parse(cls, url: str) -> Target:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidTarget(f"invalid URL: {exc}") from exc
        scheme, host = parts.scheme.lower(), parts.hostname
        if scheme not in ("http", "https") or not host:
            raise InvalidTarget("the URL needs an http:// or https:// scheme and a host")
        default = 443 if scheme == "https" else 80
        port = port or default
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default else f"{shown}:{port}"
        try:
            return cls((scheme, host, port), path.encode("ascii"), host_header.encode("ascii"))
        except UnicodeEncodeError as exc:
            raise InvalidTarget("the URL must be ASCII (percent-encode the path)") from exc


class _Connection(asyncio.Protocol):
    """One connection: feeds the answer to the request in flight to its parser as bytes arrive.

    The parser's callbacks (`on_header`, `on_body`, ...) are the protocol httptools calls."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.keep_alive = True
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._got_any = False
        self._status = 0
        self._framed = False
        """Whether the answer has a Content-Length or is chunked (else it ends at close)."""
        self._head_done = False
        self._head_bytes = 0
        self._stray = False
        """Whether the message being parsed began with no request in flight."""
        self._body: list[bytes] = []

    @property
    def idle_usable(self) -> bool:
        return not self.closed and self.keep_alive

    def begin(self, waiter: asyncio.Future[tuple[int, bytes]]) -> None:
        """Expect the answer to a request about to be written."""
        self._waiter = waiter
        self._got_any = False

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for (a 408 before closing, say): whatever this is, it is not
            # an answer to a request of ours, so this connection carries no further request.
            self.keep_alive = False
            return
        self._got_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HttpFailure("the server switched protocols, which was never asked for"))
            return
        except httptools.HttpParserError as exc:
            self._fail(HttpFailure(f"{exc}"))
            return
        if not self._head_done and self._waiter is not None:
            # The parser buffers a header until its line ends: bound what a server that never
            # ends its head can make us hold.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(HttpFailure("the answer's headers are too large"))

    def eof_received(self) -> bool:
        return False  # the server is done: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        if self._waiter is None or self._waiter.done():
            return
        if self._head_done and not self._framed:
            self._finish()  # an answer with neither length nor chunks ends when the server closes
            return
        why = f"{type(exc).__name__}: {exc}" if exc is not None else "closed by the server"
        self._fail(
            ConnectionClosed(
                f"connection lost before the whole answer ({why})", answered=self._got_any
            )
        )

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        # A message starting once the answer is complete (bytes sent past it) answers nothing
        # of ours: the connection is retired.
        self._stray = self._waiter is None
        if self._stray:
            self.keep_alive = False
        self._head_done = False
        self._head_bytes = 0
        self._framed = False
        self._body = []

    def on_header(self, name: bytes, _value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._head_done = self._status >= 200  # interim (100 Continue): the real answer follows

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._stray or self._status < 200:
            return  # stray, or an interim answer: the parser reads the real one next
        self.keep_alive = self._parser.should_keep_alive()
        self._finish()

    # -- outcome ---------------------------------------------------------------------------------

    def _finish(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, b"".join(self._body)))

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class Http1Pool:
    """Keep-alive connections to one origin, belonging to the event loop that made them."""

    def __init__(self, origin: tuple[str, str, int]) -> None:
        scheme, self._host, self._port = origin
        self._ssl = ssl.create_default_context() if scheme == "https" else None
        self._idle: list[_Connection] = []
        self._closed = False

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one request (head, blank line and body) and read the answer: (status, body).

        A reused connection the server had closed unnoticed is retried once on a new one,
        provided no byte of an answer came back on it."""
        loop = asyncio.get_running_loop()
        while True:
            conn = self._reuse()
            reused = conn is not None
            if conn is None:
                conn = await self._connect(loop)
            waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
            conn.begin(waiter)
            assert conn.transport is not None
            try:
                conn.transport.write(request)
                answer = await waiter
            except ConnectionClosed as exc:
                if reused and not exc.answered:
                    continue
                raise
            except BaseException:
                # Cancelled or timed out mid-exchange: the answer may still come, so the
                # connection cannot carry another request.
                conn.transport.close()
                raise
            if conn.idle_usable and not self._closed:
                self._idle.append(conn)
            else:
                conn.transport.close()
            return answer

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            if conn.transport is not None:
                conn.transport.close()

    def _reuse(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.idle_usable:
                return conn
            if conn.transport is not None:
                conn.transport.close()  # closed, or it sent something unasked
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        _transport, conn = await loop.create_connection(
            _Connection,
            self._host,
            self._port,
            ssl=self._ssl,
            server_hostname=self._host if self._ssl is not None else None,
        )
        return conn
