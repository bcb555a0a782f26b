"""Run events on real Postgres: the trigger's log read back, the LISTEN hub, and watches that
follow a run live, survive a killed listener connection and fall back to polling."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from agent.domain import RunStatus
from agent.events import IDLE, EventHub, EventSettings, EventStream, Idle, RunEvent
from agent.runtime import Services
from datastore.repos.events import APPLICATION_NAME
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture
from tests.integration.test_run_loop import finish, search

STEP_DELAY_S = 0.3
"""How long each scripted model answer takes, so a watcher sees steps arrive one by one."""


def shape(events: list[RunEvent]) -> list[tuple[str, str, int, str | None]]:
    return [(e.kind, e.status, e.step_number, e.tool) for e in events]


SUCCEEDED_IN_TWO = [
    ("state", "queued", 0, None),
    ("state", "running", 0, None),
    ("step", "running", 1, "search_documents"),
    ("step", "succeeded", 2, "finish"),
    ("state", "succeeded", 2, None),
]


def script_two_steps(model: ScriptedModelServer, delay_s: float = 0.0) -> None:
    model.enqueue(search("leave"), delay_s=delay_s)
    model.enqueue(finish("30 days"), delay_s=delay_s)


async def collect(
    stream: EventStream,
    run_id: uuid.UUID,
    tenant_id: uuid.UUID | None,
    *,
    after: int | None = None,
    on_event: Callable[[RunEvent], Any] | None = None,
) -> list[RunEvent]:
    watch = await stream.open(run_id, tenant_id, after=after)
    events: list[RunEvent] = []
    async for item in watch.follow():
        if isinstance(item, Idle):
            continue
        events.append(item)
        if on_event is not None:
            await on_event(item)
    return events


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def listener_pids(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = "
            "current_database()",
            (APPLICATION_NAME,),
        ).fetchall()
    return [r[0] for r in rows]


async def test_the_log_reads_back_in_order_with_each_steps_tool(
    services: Services,
    acme: TenantFixture,
    globex: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    script_two_steps(scripted_model)
    run = await services.runs.submit(acme.principal, "assistant", "How much leave?")
    assert await services.worker().run_until_idle() == 1
    repo = services.store.events

    events = await repo.events_after(run.id, 0, acme.tenant.id, 100)
    assert shape(list(events)) == SUCCEEDED_IN_TWO
    ids = [e.id for e in events]
    assert ids == sorted(ids)
    assert all(e.run_id == run.id and e.error_code is None for e in events)
    # The operator's view sees the same; another tenant sees nothing; a cursor and a limit page.
    assert [e.id for e in await repo.events_after(run.id, 0, None, 100)] == ids
    assert await repo.events_after(run.id, 0, globex.tenant.id, 100) == []
    assert [e.id for e in await repo.events_after(run.id, ids[1], acme.tenant.id, 2)] == ids[2:4]
    assert await repo.latest_event_id(run.id, acme.tenant.id) == ids[-1]
    assert await repo.latest_event_id(run.id, globex.tenant.id) == 0


async def test_a_failed_step_carries_its_error_code(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    for _ in range(3):  # every decision attempt answers garbage
        scripted_model.enqueue("not json at all")
    run = await services.runs.submit(acme.principal, "assistant", "q")
    await services.worker().run_until_idle()
    events = await collect(services.events, run.id, acme.tenant.id)
    assert [(e.kind, e.status, e.error_code) for e in events[-2:]] == [
        ("step", "failed", "invalid_model_output"),
        ("state", "failed", None),
    ]


async def test_a_watch_follows_a_run_live_and_ends_with_its_terminal_state(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    script_two_steps(scripted_model, delay_s=STEP_DELAY_S)
    run = await services.runs.submit(acme.principal, "assistant", "How much leave?")
    seen_at: list[float] = []

    async def stamp(_event: RunEvent) -> None:
        seen_at.append(time.monotonic())

    watcher = asyncio.create_task(collect(services.events, run.id, acme.tenant.id, on_event=stamp))
    await wait_until(lambda: services.events.hub.listening)
    await services.worker().run_until_idle()
    events = await asyncio.wait_for(watcher, 10)

    assert shape(events) == SUCCEEDED_IN_TWO
    # Live, not a replay at the end: the first step arrived while the second was being decided.
    assert seen_at[-1] - seen_at[2] > STEP_DELAY_S / 2
    assert services.events.hub.subscribers == 0


async def test_a_terminal_run_sends_its_backlog_and_ends_and_a_resume_sends_the_rest(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    script_two_steps(scripted_model)
    run = await services.runs.submit(acme.principal, "assistant", "q")
    await services.worker().run_until_idle()

    everything = await asyncio.wait_for(collect(services.events, run.id, acme.tenant.id), 5)
    assert shape(everything) == SUCCEEDED_IN_TWO
    ids = [e.id for e in everything]
    rest = await asyncio.wait_for(collect(services.events, run.id, None, after=ids[2]), 5)
    assert [e.id for e in rest] == ids[3:]
    # A cursor at (or past) the end: nothing more, and the watch still ends at once.
    assert await asyncio.wait_for(collect(services.events, run.id, None, after=ids[-1]), 5) == []


async def test_a_cursor_past_the_end_of_a_live_run_ends_when_the_run_does(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    # A client that sends an id from the future sees nothing, but is not left hanging forever.
    script_two_steps(scripted_model)
    run = await services.runs.submit(acme.principal, "assistant", "q")
    quick = EventStream(
        services.store.runs,
        services.store.events,
        EventHub(services.store.events),
        EventSettings(events_heartbeat_s=0.2),
    )
    watcher = asyncio.create_task(collect(quick, run.id, acme.tenant.id, after=10**12))
    await services.worker().run_until_idle()
    assert await asyncio.wait_for(watcher, 5) == []
    await quick.aclose()


async def test_unknown_and_foreign_runs_are_not_found(
    services: Services, acme: TenantFixture, globex: TenantFixture
) -> None:
    from agent.errors import CallerError, NotFound

    run = await services.runs.submit(acme.principal, "assistant", "q")
    with pytest.raises(NotFound):
        await services.events.open(run.id, globex.tenant.id)
    with pytest.raises(NotFound):
        await services.events.open(uuid.uuid4(), None)
    with pytest.raises(CallerError):
        await services.events.open(run.id, acme.tenant.id, after=-1)


async def test_a_quiet_watch_yields_heartbeats(services: Services, acme: TenantFixture) -> None:
    run = await services.runs.submit(acme.principal, "assistant", "q")  # nobody drives it
    quick = EventStream(
        services.store.runs,
        services.store.events,
        EventHub(services.store.events),
        EventSettings(events_heartbeat_s=0.2),
    )
    watch = await quick.open(run.id, acme.tenant.id)
    items: list[RunEvent | Idle] = []
    follow = watch.follow()
    started = time.monotonic()
    async for item in follow:
        items.append(item)
        if items.count(IDLE) == 3:
            break
    await follow.aclose()
    elapsed = time.monotonic() - started
    assert [i.kind for i in items if not isinstance(i, Idle)] == ["state"]
    assert 0.5 < elapsed < 2.0
    assert quick.hub.subscribers == 0  # closing the generator unsubscribed it
    await quick.aclose()


async def test_the_listener_survives_its_connection_being_terminated(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    database_url: str,
) -> None:
    script_two_steps(scripted_model, delay_s=STEP_DELAY_S)
    run = await services.runs.submit(acme.principal, "assistant", "q")
    hub = services.events.hub
    watcher = asyncio.create_task(collect(services.events, run.id, acme.tenant.id))
    await wait_until(lambda: hub.listening and len(listener_pids(database_url)) == 1)
    [first] = listener_pids(database_url)

    with psycopg.connect(database_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (first,)).fetchone() == (True,)
    await wait_until(lambda: not hub.listening, timeout=5)
    await wait_until(lambda: hub.listening, timeout=5)
    [second] = listener_pids(database_url)
    assert second != first

    await services.worker().run_until_idle()
    events = await asyncio.wait_for(watcher, 10)
    assert shape(events) == SUCCEEDED_IN_TWO


class SilentStore:
    """The real event log, but a listener that never gets through: notifications never flow."""

    def __init__(self, services: Services) -> None:
        self._repo = services.store.events
        self.events_after = self._repo.events_after
        self.latest_event_id = self._repo.latest_event_id

    async def listen(self, on_notify: Any, on_state: Any) -> None:
        await asyncio.Event().wait()


async def test_without_notifications_a_watch_polls_and_never_stalls(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    script_two_steps(scripted_model, delay_s=STEP_DELAY_S)
    run = await services.runs.submit(acme.principal, "assistant", "q")
    silent = SilentStore(services)
    polling = EventStream(
        services.store.runs, silent, EventHub(silent), EventSettings(events_poll_s=0.1)
    )
    watcher = asyncio.create_task(collect(polling, run.id, acme.tenant.id))
    await services.worker().run_until_idle()
    finished = time.monotonic()
    events = await asyncio.wait_for(watcher, 5)
    assert shape(events) == SUCCEEDED_IN_TWO
    assert time.monotonic() - finished < 1.0
    assert not polling.hub.listening
    await polling.aclose()


async def test_closing_the_hub_ends_its_watches(services: Services, acme: TenantFixture) -> None:
    run = await services.runs.submit(acme.principal, "assistant", "q")  # nobody drives it
    watcher = asyncio.create_task(collect(services.events, run.id, acme.tenant.id))
    await wait_until(lambda: services.events.hub.subscribers == 1)
    await services.events.aclose()
    assert [e.status for e in await asyncio.wait_for(watcher, 5)] == [RunStatus.QUEUED.value]
    assert services.events.hub.subscribers == 0
