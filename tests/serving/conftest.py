"""Fixtures for serving tests: a fresh scripted server and a client pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from serving.client import OpenAICompatibleClient
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
