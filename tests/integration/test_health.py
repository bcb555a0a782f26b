"""Readiness probes: each component reported, a hung model bounded by the probe's own deadline."""

from __future__ import annotations

import asyncio
import socket

from agent.runtime import Services, Settings, open_services
from serving.settings import ServingSettings


async def test_all_components_ready(services: Services) -> None:
    health = {c.name: c for c in await services.health()}
    assert set(health) == {"database", "chat_model", "embed_model"}
    assert all(c.ok for c in health.values())


async def test_hung_model_is_reported_not_waited_for(settings: Settings, database_url: str) -> None:
    # A listening socket nobody accepts from: connections open, no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        cfg = settings.model_copy(
            update={"serving": ServingSettings(chat_url=url, embed_url=url, model_timeout_s=60)}
        )
        services = await open_services(cfg, database_url, upgrade=False)
        try:
            # The model timeout is a minute; the probe's own deadline must answer long before.
            health = await asyncio.wait_for(services.health(timeout_s=0.3), 10)
        finally:
            await services.aclose()
    by_name = {c.name: c for c in health}
    assert by_name["database"].ok
    assert not by_name["chat_model"].ok
    assert "no answer within 0.3 s" in by_name["chat_model"].detail
    assert not by_name["embed_model"].ok
