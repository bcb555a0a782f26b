"""The HTTP transport under the model clients: keep-alive connections per event loop.

The agent loop makes one model call per step, so the client's CPU per request is a large part of
a step's cost. httpx (which the rest of the appliance uses) spends 0.6 ms of CPU per request
sequentially and over 2 ms with 200 requests in flight, aiohttp ~0.12 ms, and the keep-alive
pool of `serving.http1` (answers parsed by httptools) a few hundredths, all measured on this
machine against the same loopback server (bench/client_overhead.py). So requests go over
`serving.http1`.

This module knows only how to move bytes and how transport failures map to `serving.errors`;
what the bytes mean is `serving.client`'s job.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from serving.errors import ModelTimeout, ModelUnavailable, ServingError
from serving.http1 import ConnectionClosed, Http1Pool, HttpFailure, InvalidTarget, Target


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    body: bytes
    latency_ms: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class HttpTransport:
    """Sends requests to one endpoint; `where` names it in error messages (no credentials)."""

    headers: dict[str, str]

    def __init__(
        self,
        where: str,
        headers: dict[str, str],
        timeout_s: float,
    ) -> None:
        if any(c in text for item in headers.items() for text in item for c in "\r\n"):
            raise ValueError("model request headers must not contain line breaks")
        self._where = where
        self.headers = headers
        self._timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pools: dict[tuple[str, str, int], Http1Pool] = {}
        self._targets: dict[str, tuple[Target, bytes]] = {}
        """Per URL: where it goes and the request head up to the body's length."""

    async def request(self, method: str, url: str, body: bytes | None) -> HttpAnswer:
        start = time.perf_counter()
        try:
            pool, request = self._prepare(method, url, body)
            async with asyncio.timeout(self._timeout_s):
                status, payload = await pool.exchange(request)
        except (HttpFailure, OSError, TimeoutError) as exc:
            raise self.transport_error(exc) from exc
        return HttpAnswer(status, payload, (time.perf_counter() - start) * 1000.0)

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        if self._loop is asyncio.get_running_loop():
            for pool in pools.values():
                pool.close()

    def _prepare(self, method: str, url: str, body: bytes | None) -> tuple[Http1Pool, bytes]:
        if method not in ("GET", "POST"):  # http1 reads every answer as having a body
            raise ValueError(f"the model transport sends GET and POST only, not {method}")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Connections belong to the loop that opened them; tests and CLI commands may run
            # several loops in turn. The old loop's connections went with it.
            self._loop = loop
            self._pools = {}
        key = f"{method} {url}"
        prepared = self._targets.get(key)
        if prepared is None:
            target = Target.parse(url)
            lines = [b"%s %s HTTP/1.1" % (method.encode("ascii"), target.path)]
            lines.append(b"Host: " + target.host_header)
            lines += [f"{name}: {value}".encode("latin-1") for name, value in self.headers.items()]
            prepared = self._targets[key] = (target, b"\r\n".join(lines) + b"\r\n")
        target, head = prepared
        pool = self._pools.get(target.origin)
        if pool is None:
            pool = self._pools[target.origin] = Http1Pool(target.origin)
        if body is None:
            return pool, head + b"\r\n"
        return pool, head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    def transport_error(self, exc: BaseException) -> ServingError:
        """The one place transport failures become serving errors."""
        kind = type(exc).__name__
        if isinstance(exc, TimeoutError):
            return ModelTimeout(f"{self._where} did not answer within the deadline ({kind})")
        if isinstance(exc, InvalidTarget):
            return ModelUnavailable(f"model endpoint URL is invalid: {self._where} ({exc})")
        if isinstance(exc, HttpFailure) and not isinstance(exc, ConnectionClosed):
            # Not an engine speaking HTTP/1.1 (a wrong port, say): nothing there can answer.
            return ModelUnavailable(f"{self._where} answered malformed HTTP ({exc})")
        # Refused or reset connections, a server that hung up before answering, and anything
        # else on the transport: the engine cannot be reached right now.
        return ModelUnavailable(f"{self._where} is unreachable ({kind}: {exc})")
