"""The factory's two modes: its own `Services` opened by the lifespan, or one lent by
`garrison up`, which serves API and worker on one event loop and keeps owning it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import httpx
import uvicorn

from agent.api.app import create_app
from agent.runtime import Services, Settings
from tests.api.conftest import bearer, live_server
from tests.conftest import TenantFixture


class _QuietServer(uvicorn.Server):
    # On the main thread uvicorn would take over SIGINT/SIGTERM; the test runner keeps them.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def test_lent_services_are_used_on_the_callers_loop_and_left_open(
    services: Services, settings: Settings, acme: TenantFixture
) -> None:
    # No usable URL: if the app opened its own services instead, every /v1 call would fail.
    app = create_app(settings, "postgresql://nobody@127.0.0.1:1/none", services=services)
    server = _QuietServer(uvicorn.Config(app, port=0, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn stopped during startup"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
        response = await client.get("/v1/runs", headers=bearer(acme.secret))
        assert response.status_code == 200, response.text
    server.should_exit = True
    await task

    await services.store.ping()  # still open: the lender closes it, not the app
    assert await services.runs.list(acme.tenant.id) == []


def test_own_services_live_exactly_as_long_as_the_server(
    settings: Settings, database_url: str
) -> None:
    app = create_app(settings, database_url)
    assert not hasattr(app.state, "services")
    with live_server(app) as base_url:
        assert isinstance(app.state.services, Services)
        assert httpx.get(f"{base_url}/readyz", trust_env=False).status_code == 200
    assert not hasattr(app.state, "services")


async def test_json_needs_a_json_content_type(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    # A browser can send text/plain cross-site without a CORS preflight; such a body is not
    # read as JSON, so a forged form post cannot start a run.
    headers = {**bearer(acme.secret), "Content-Type": "text/plain"}
    body = b'{"agent": "assistant", "input": "hello"}'
    response = await client.post("/v1/runs", content=body, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
