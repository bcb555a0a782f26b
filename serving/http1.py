"""A minimal HTTP/1.1 client for the model hot path: keep-alive connections to one origin.

Why not aiohttp (which served this path before, and still serves a caller-supplied session): a
model call is made once per agent step, and aiohttp spends ~0.12 ms of CPU per request building
its request and response objects, against ~0.03 ms here for the same exchange, measured on this
machine against the same loopback server (`bench/client_overhead.py`, `bench/loop_overhead.py`).
At a few tenths of a millisecond of CPU per step, that difference is a fifth of the step.

What it does: one request at a time per connection, idle connections reused (last in, first
out), `http` and `https` (verified with the system's trust store), a response framed by
Content-Length, by chunked transfer-encoding, or by the server closing the connection, and a
request retried once on a fresh connection when a reused one turns out to have been closed by
the server before it answered anything. What it does not: redirects, proxies, cookies,
compression (it never asks for any), HTTP/2, streaming. Failures are `HttpFailure`s (or
`OSError` from the socket); `serving.transport` maps them to serving errors.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
"""A status line and headers larger than this are not a model server's answer."""
NO_BODY_STATUSES = frozenset({204, 304})


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
    """One connection: parses the answer to the request in flight as its bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.keep_alive = True
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._head_only = False
        self._got_any = False
        self._status = 0
        self._head_done = False
        self._remaining: int | None = None
        """Body bytes still expected: Content-Length framing, or the current chunk's size."""
        self._chunked = False
        self._trailers = False
        self._until_close = False
        self._body = bytearray()

    @property
    def idle_usable(self) -> bool:
        return not self.closed and not self._buf

    def begin(self, waiter: asyncio.Future[tuple[int, bytes]], head_only: bool) -> None:
        """Expect the answer to a request about to be written."""
        self._waiter = waiter
        self._head_only = head_only
        self._got_any = False
        self._head_done = False
        self._body = bytearray()
        if self._buf:  # bytes nobody asked for: whatever this is, it is not our answer
            self._fail(HttpFailure("the server sent bytes nobody asked for"))

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._got_any = True
        self._buf += data
        if self._waiter is None:
            return
        try:
            self._parse()
        except HttpFailure as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        return False  # the server is done: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        if self._waiter is None or self._waiter.done():
            return
        if self._head_done and self._until_close:
            self._body += self._buf
            self._buf.clear()
            self._finish()
            return
        why = f"{type(exc).__name__}: {exc}" if exc is not None else "closed by the server"
        self._fail(
            ConnectionClosed(
                f"connection lost before the whole answer ({why})", answered=self._got_any
            )
        )

    # -- parsing ---------------------------------------------------------------------------------

    def _parse(self) -> None:
        while not self._head_done:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD_BYTES:
                    raise HttpFailure("the answer's headers are too large")
                return
            head = bytes(self._buf[:end])
            del self._buf[: end + 4]
            self._read_head(head)  # a 1xx interim answer leaves _head_done False: read on
        if self._chunked:
            self._parse_chunks()
        elif self._remaining is not None and len(self._buf) >= self._remaining:
            self._body += self._buf[: self._remaining]
            del self._buf[: self._remaining]
            self._finish()
        # else: the body runs until the server closes; connection_lost finishes it

    def _read_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or not code.isdigit():
            raise HttpFailure(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(code)
        if status < 200:
            return  # interim (100 Continue and the like): the real answer follows
        self._status = status
        self._head_done = True
        self.keep_alive = version == b"HTTP/1.1"
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise HttpFailure(f"malformed header line: {line[:80]!r}")
            name = name.strip().lower()
            if name == b"content-length":
                value = value.strip()
                if not value.isdigit():
                    raise HttpFailure(f"bad Content-Length: {value[:20]!r}")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                tokens = value.lower()
                if b"close" in tokens:
                    self.keep_alive = False
                elif b"keep-alive" in tokens:
                    self.keep_alive = True
        self._chunked = chunked and not (self._head_only or status in NO_BODY_STATUSES)
        self._trailers = False
        self._until_close = False
        if self._head_only or status in NO_BODY_STATUSES:
            self._remaining = 0
        elif chunked:
            self._remaining = None  # chunked framing wins over a Content-Length (RFC 9112 6.3)
        elif length is not None:
            self._remaining = length
        else:
            self._remaining = None
            self._until_close = True
            self.keep_alive = False

    def _parse_chunks(self) -> None:
        buf = self._buf
        while True:
            if self._remaining is None or self._trailers:
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        raise HttpFailure("a chunk-size or trailer line is too long")
                    return
                line = bytes(buf[:line_end])
                del buf[: line_end + 2]
                if self._trailers:
                    if not line:  # the empty line after the trailers (ignored) ends the answer
                        self._finish()
                        return
                    continue
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError as exc:
                    raise HttpFailure(f"bad chunk size: {size_text[:20]!r}") from exc
                if size == 0:
                    self._trailers = True
                else:
                    self._remaining = size
                continue
            size = self._remaining
            if len(buf) < size + 2:
                return
            if buf[size : size + 2] != b"\r\n":
                raise HttpFailure("a chunk is not followed by CRLF")
            self._body += buf[:size]
            del buf[: size + 2]
            self._remaining = None

    def _finish(self) -> None:
        waiter, self._waiter = self._waiter, None
        if self._buf:
            self.keep_alive = False  # bytes past the answer: never reuse this connection
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, bytes(self._body)))

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

    async def exchange(
        self, head: bytes, body: bytes, *, head_only: bool = False
    ) -> tuple[int, bytes]:
        """Send one request (`head` ends with its blank line) and read the answer: (status,
        body). A reused connection the server had closed unnoticed is retried once on a new
        one, provided no byte of an answer came back on it."""
        loop = asyncio.get_running_loop()
        request = head + body if body else head
        while True:
            conn = self._reuse()
            reused = conn is not None
            if conn is None:
                conn = await self._connect(loop)
            waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
            conn.begin(waiter, head_only)
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
            if conn.keep_alive and not conn.closed and not self._closed:
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
                conn.transport.close()  # closed, or it sent something unasked (a 408, say)
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
