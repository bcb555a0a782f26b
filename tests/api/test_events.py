"""`GET /v1/runs/{id}/events` over real HTTP: Server-Sent Events streamed while a worker drives
the run, resumed with Last-Event-ID, refused (as JSON, before any streaming) when they must be."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI

from agent.events import EventSettings
from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.api.conftest import Serve, assert_error, bearer
from tests.conftest import PgCluster, TenantFixture
from tests.integration.test_run_loop import finish, search

STEP_DELAY_S = 0.3

SUCCEEDED_IN_TWO = [
    ("state", "queued", 0),
    ("state", "running", 0),
    ("step", "running", 1),
    ("step", "succeeded", 2),
    ("state", "succeeded", 2),
]


@dataclass
class Sse:
    """One dispatched Server-Sent Event, or a comment (`comment` set, the rest empty)."""

    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    comment: str | None = None

    @property
    def json(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads("\n".join(self.data))
        return body


async def sse_items(response: httpx.Response) -> AsyncIterator[Sse]:
    """Parse the event-stream format (https://html.spec.whatwg.org/#event-stream-interpretation)
    just enough for these tests: fields, comments, a blank line ends an event."""
    current = Sse()
    async for line in response.aiter_lines():
        if line == "":
            if current.data or current.id is not None or current.event is not None:
                yield current
            current = Sse()
        elif line.startswith(":"):
            yield Sse(comment=line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                current.data.append(value)
            elif name == "id":
                current.id = value
            elif name == "event":
                current.event = value


def shape(events: list[Sse]) -> list[tuple[str | None, str, int]]:
    return [(e.event, e.json["status"], e.json["step"]) for e in events]


def stream(
    client: httpx.AsyncClient,
    run_id: str,
    tenant: TenantFixture,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    return client.stream(
        "GET",
        f"/v1/runs/{run_id}/events",
        params=params,
        headers={**bearer(tenant.secret), **(headers or {})},
    )


async def read_events(
    client: httpx.AsyncClient,
    run_id: str,
    tenant: TenantFixture,
    *,
    stop: Callable[[list[Sse]], bool] = lambda _: False,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> list[Sse]:
    """Events (not comments) until the server ends the stream, or until `stop` says so."""
    events: list[Sse] = []
    async with stream(client, run_id, tenant, params, headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for item in sse_items(response):
            if item.comment is None:
                events.append(item)
                if stop(events):
                    break
    return events


def script_two_steps(model: ScriptedModelServer, delay_s: float = STEP_DELAY_S) -> None:
    model.enqueue(search("leave"), delay_s=delay_s)
    model.enqueue(finish("30 days"), delay_s=delay_s)


async def submit(client: httpx.AsyncClient, tenant: TenantFixture) -> str:
    response = await client.post(
        "/v1/runs",
        json={"agent": "assistant", "input": "How much leave?"},
        headers=bearer(tenant.secret),
    )
    assert response.status_code == 202, response.text
    run_id: str = response.json()["id"]
    return run_id


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_run_streams_live_in_order_and_the_stream_ends_with_it(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    script_two_steps(scripted_model)
    run_id = await submit(client, acme)
    arrived: list[float] = []

    def stamp(events: list[Sse]) -> bool:
        arrived.append(time.monotonic())
        return False

    reader = asyncio.create_task(read_events(client, run_id, acme, stop=stamp))
    await asyncio.sleep(0.2)  # the stream is open before the worker starts
    await services.worker().run_until_idle()
    events = await asyncio.wait_for(reader, 10)  # ends by itself after the final state

    assert shape(events) == SUCCEEDED_IN_TWO
    ids = [int(e.id or "") for e in events]
    assert ids == sorted(set(ids))
    first = events[0].json
    assert set(first) == {
        "id",
        "run_id",
        "kind",
        "status",
        "step",
        "created_at",
        "tool",
        "error_code",
    }
    assert first["run_id"] == run_id
    assert [e.json["id"] for e in events] == ids
    assert [e.json["kind"] for e in events] == [e.event for e in events]
    assert [e.json["tool"] for e in events] == [None, None, "search_documents", "finish", None]
    assert arrived[-1] - arrived[2] > STEP_DELAY_S / 2  # live, not all at the end


async def test_reconnecting_with_last_event_id_gets_exactly_the_rest(
    settings: Settings,
    database_url: str,
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    serve: Serve,  # last: the server stops before the database is dropped
) -> None:
    apps: list[FastAPI] = []
    base_url = serve(settings, database_url, customize=apps.append)
    hub = apps[0].state.services.events.hub
    script_two_steps(scripted_model, delay_s=2 * STEP_DELAY_S)
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0, trust_env=False) as client:
        run_id = await submit(client, acme)
        worker = asyncio.create_task(services.worker().run_until_idle())
        # Hang up mid-run, right after the first step.
        first = await read_events(client, run_id, acme, stop=lambda seen: seen[-1].event == "step")
        assert shape(first) == SUCCEEDED_IN_TWO[:3]
        await eventually(lambda: hub.subscribers == 0)  # the hang-up ended the server's watch
        assert not worker.done()

        rest = await read_events(
            client, run_id, acme, headers={"Last-Event-ID": first[-1].id or ""}
        )
        await worker
        assert shape(first + rest) == SUCCEEDED_IN_TWO
        ids = [e.id for e in first + rest]
        assert len(set(ids)) == len(ids)

        # Later, the same from the query, and the header winning over it.
        again = await read_events(client, run_id, acme, params={"after": ids[0] or ""})
        assert [e.id for e in again] == ids[1:]
        both = await read_events(
            client,
            run_id,
            acme,
            params={"after": ids[0] or ""},
            headers={"Last-Event-ID": ids[3] or ""},
        )
        assert [e.id for e in both] == ids[4:]


async def test_a_finished_run_sends_its_history_and_closes(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    script_two_steps(scripted_model, delay_s=0)
    run_id = await submit(client, acme)
    await services.worker().run_until_idle()
    events = await asyncio.wait_for(read_events(client, run_id, acme), 5)
    assert shape(events) == SUCCEEDED_IN_TWO
    last = events[-1].id or ""
    assert (
        await asyncio.wait_for(
            read_events(client, run_id, acme, headers={"Last-Event-ID": last}), 5
        )
        == []
    )


async def test_a_quiet_stream_sends_heartbeats(
    settings: Settings, database_url: str, acme: TenantFixture, serve: Serve
) -> None:
    quick = settings.model_copy(update={"events": EventSettings(events_heartbeat_s=0.2)})
    base_url = serve(quick, database_url)
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0, trust_env=False) as client:
        run_id = await submit(client, acme)  # no worker: the run stays queued
        items: list[Sse] = []
        started = time.monotonic()
        async with stream(client, run_id, acme) as response:
            async for item in sse_items(response):
                items.append(item)
                if sum(1 for i in items if i.comment) == 3:
                    break
        assert 0.4 < time.monotonic() - started < 3
        assert [i.comment for i in items] == [None, "heartbeat", "heartbeat", "heartbeat"]
        assert items[0].event == "state"


async def test_another_tenants_or_an_unknown_run_is_404_before_streaming(
    client: httpx.AsyncClient, acme: TenantFixture, globex: TenantFixture
) -> None:
    run_id = await submit(client, acme)
    for path in (run_id, str(uuid.uuid4()), "not-a-uuid"):
        response = await client.get(f"/v1/runs/{path}/events", headers=bearer(globex.secret))
        assert_error(response, 404, "not_found")
    response = await client.get(f"/v1/runs/{run_id}/events")
    assert_error(response, 401, "unauthorized")
    for bad in (
        {"Last-Event-ID": "yesterday"},
        {"Last-Event-ID": "-3"},
        {"Last-Event-ID": "9" * 30},
    ):
        response = await client.get(
            f"/v1/runs/{run_id}/events", headers={**bearer(acme.secret), **bad}
        )
        assert_error(response, 422, "invalid_request")
    for after in ("-1", str(2**63)):
        response = await client.get(
            f"/v1/runs/{run_id}/events", params={"after": after}, headers=bearer(acme.secret)
        )
        assert_error(response, 422, "invalid_request")


async def test_database_down_is_503_not_a_stream(
    settings: Settings, pg_cluster: PgCluster, serve: Serve
) -> None:
    base_url = serve(settings, pg_cluster.url_for("garrison_no_such_database"))
    async with httpx.AsyncClient(base_url=base_url, timeout=20.0, trust_env=False) as client:
        response = await client.get(
            f"/v1/runs/{uuid.uuid4()}/events", headers=bearer("gk_any-key-at-all")
        )
    assert_error(response, 503, "database_unavailable")
    assert response.headers["retry-after"] == "5"
