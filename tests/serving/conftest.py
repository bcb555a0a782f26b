"""Fixtures for serving tests: scripted servers, a client pointed at one, and routers over
several with a fake clock and a backoff that records instead of sleeping."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from serving.client import OpenAICompatibleClient
from serving.lane import RoutePolicy
from serving.registry import Capabilities, Deployment, Placement, Registry
from serving.router import Router
from serving.settings import ServingSettings
from serving.testing import ScriptedModelServer

API_KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(embedding_dim=16) as srv:
        yield srv


@pytest.fixture
async def client(server: ScriptedModelServer) -> AsyncIterator[OpenAICompatibleClient]:
    async with OpenAICompatibleClient(
        server.base_url, model="garrison-decide", api_key=API_KEY, timeout_s=5.0
    ) as c:
        yield c


# -- routing -----------------------------------------------------------------------------------


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def ext(
    name: str, url: str, roles: tuple[str, ...] = ("decide",), *, max_in_flight: int = 8
) -> Deployment:
    """An external deployment at `url`."""
    caps = Capabilities(embedding_dim=384 if "embed" in roles else None)
    return Deployment(
        name=name,
        model="scripted",
        roles=roles,
        capabilities=caps,
        placement=Placement(kind="external", url=url),
        max_in_flight=max_in_flight,
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """Builds routers with a fake clock and a recording, non-sleeping backoff."""

    clock: FakeClock = field(default_factory=FakeClock)
    sleeps: list[float] = field(default_factory=list)
    routers: list[Router] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    def router(
        self,
        *deployments: Deployment,
        routes: dict[str, tuple[str, ...]] | None = None,
        timeout_s: float = 5.0,
        seed: int = 7,
        **policy: Any,
    ) -> Router:
        registry = Registry(deployments=deployments, routes=routes or {})
        settings = ServingSettings(model_timeout_s=timeout_s, model_api_key=None)
        router = Router(
            registry,
            settings,
            policy=RoutePolicy(**policy),
            clock=self.clock,
            rng=random.Random(seed),
            sleep=self.sleep,
        )
        self.routers.append(router)
        return router


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    for router in h.routers:
        await router.aclose()


@pytest.fixture
def primary() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(model="primary") as srv:
        yield srv


@pytest.fixture
def fallback() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(model="fallback") as srv:
        yield srv
