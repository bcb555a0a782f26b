"""The HTTP transport under the model clients: aiohttp, one keep-alive session per event loop.

Why aiohttp and not httpx (which the rest of the appliance uses): the agent loop makes one model
call per step, and at the appliance's concurrency (hundreds of runs per worker) httpx spends
0.6 ms of CPU per request sequentially and over 2 ms with 200 requests in flight (its pool scans
every connection for every request), against 0.11 ms for aiohttp in both cases, measured on
this machine against the same loopback server (bench/client_overhead.py). That difference is
most of a step's cost, so the hot path gets the faster client and nothing else changes.

This module knows only how to move bytes and how transport failures map to `serving.errors`;
what the bytes mean is `serving.client`'s job.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from serving.errors import ModelOutputError, ModelTimeout, ModelUnavailable, ServingError


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
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._where = where
        self.headers = headers
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._owns_session = session is None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def request(self, method: str, url: str, body: bytes | None) -> HttpAnswer:
        session = self._session_for_loop()
        start = time.perf_counter()
        try:
            async with session.request(
                method, url, data=body, headers=self.headers, timeout=self._timeout
            ) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise self.transport_error(exc) from exc
        return HttpAnswer(status, payload, (time.perf_counter() - start) * 1000.0)

    async def aclose(self) -> None:
        session, loop = self._session, self._loop
        if not self._owns_session or session is None:
            return
        self._session = None
        if loop is asyncio.get_running_loop():
            await session.close()

    def _session_for_loop(self) -> aiohttp.ClientSession:
        # Created lazily: a session belongs to the event loop it was made in, and clients are
        # built before any loop runs (the router at start-up, tests across loops).
        loop = asyncio.get_running_loop()
        if self._session is not None and self._owns_session and self._loop is not loop:
            # Its loop is gone, so it cannot be closed; detached, it is marked closed without
            # touching that loop.
            self._session.detach()
            self._session = None
        if self._session is None:
            # trust_env stays off: an HTTP(S)_PROXY meant for the internet must not silently
            # route loopback engine traffic through a proxy.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                trust_env=False,
            )
            self._owns_session = True
            self._loop = loop
        return self._session

    def transport_error(self, exc: BaseException) -> ServingError:
        """The one place transport failures become serving errors."""
        kind = type(exc).__name__
        if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
            return ModelTimeout(f"{self._where} did not answer within the deadline ({kind})")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return ModelOutputError(f"{self._where} sent an undecodable body ({kind})")
        if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError | ValueError):
            return ModelUnavailable(f"model endpoint URL is invalid: {self._where} ({kind})")
        # Refused or reset connections, a server that hung up before answering, and anything
        # else on the transport: the engine cannot be reached right now.
        return ModelUnavailable(f"{self._where} is unreachable ({kind}: {exc})")
