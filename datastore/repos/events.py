"""Run events: reading a run's event log, and listening for new events with LISTEN/NOTIFY.

The `runs_events` trigger (migration 0004) writes a `run_events` row for every state change and
committed step, in the transaction that made it, and then NOTIFYs `garrison_run_events` with
`<run_id>:<event_id>`. This module reads those rows and holds the one connection a process
listens on. What a notification means for a watcher (read the table again) belongs to
`agent.events`; this module never decides what to send anyone.

Ordering: a run's events are written by updates of its `runs` row, which hold that row's lock
until they commit, so one run's event ids are committed in increasing order. Reading "the run's
events with id > the last one seen" therefore never skips an event that commits later.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

import psycopg
from sqlalchemy import Row, Table, and_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from agent.errors import CallerError
from datastore.errors import translated
from datastore.schema import RunEventRow, StepRow

log = logging.getLogger(__name__)

EVENTS = cast(Table, RunEventRow.__table__)
STEPS = cast(Table, StepRow.__table__)

CHANNEL = "garrison_run_events"
"""The NOTIFY channel the `runs_events` trigger announces every new event on."""
APPLICATION_NAME = "garrison-events"
"""How the listening connection names itself in `pg_stat_activity`."""
MAX_PAGE = 1000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredRunEvent:
    """One `run_events` row, with the tool and error code of its step for a `step` event."""

    id: int
    run_id: uuid.UUID
    tenant_id: uuid.UUID
    kind: str
    """`state` or `step`."""
    status: str
    """The run's status when the event was written."""
    step_number: int
    """The run's committed steps at that moment (the step itself, for a `step` event)."""
    created_at: datetime
    tool: str | None
    error_code: str | None


def _event(row: Row[Any]) -> StoredRunEvent:
    return StoredRunEvent(
        id=row.id,
        run_id=row.run_id,
        tenant_id=row.tenant_id,
        kind=row.kind,
        status=row.status,
        step_number=row.step_number,
        created_at=row.created_at,
        tool=row.tool,
        error_code=row.error_code,
    )


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between reconnection attempts: doubling from `first_s` up to `max_s`."""

    first_s: float = 0.1
    max_s: float = 5.0

    def delay(self, failures: int) -> float:
        return float(min(self.max_s, self.first_s * 2 ** max(0, failures - 1)))


NotifyCallback = Callable[[uuid.UUID, int], None]
StateCallback = Callable[[bool], None]


class EventRepository:
    def __init__(
        self, engine: AsyncEngine, *, connect_timeout_s: float = 5.0, backoff: Backoff = Backoff()
    ) -> None:
        self._engine = engine
        self._connect_timeout_s = connect_timeout_s
        self._backoff = backoff

    async def events_after(
        self, run_id: uuid.UUID, after: int, tenant_id: uuid.UUID | None, limit: int
    ) -> list[StoredRunEvent]:
        """The run's events with id > `after`, oldest first, at most `limit`.

        `tenant_id=None` is the operator's view across tenants; otherwise another tenant's run has
        no events.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise CallerError(f"limit must be between 1 and {MAX_PAGE}")
        # The step is read with its event (one query): both were written in the step's
        # transaction, so a visible `step` event always finds its step.
        step = and_(
            EVENTS.c.kind == "step",
            STEPS.c.run_id == EVENTS.c.run_id,
            STEPS.c.number == EVENTS.c.step_number,
        )
        stmt = (
            select(EVENTS, STEPS.c.tool, STEPS.c.error_code)
            .select_from(EVENTS.outerjoin(STEPS, step))
            .where(EVENTS.c.run_id == run_id, EVENTS.c.id > after)
            .order_by(EVENTS.c.id)
            .limit(limit)
        )
        if tenant_id is not None:
            stmt = stmt.where(EVENTS.c.tenant_id == tenant_id)
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_event(r) for r in rows]

    async def latest_event_id(self, run_id: uuid.UUID, tenant_id: uuid.UUID | None) -> int:
        """The id of the run's newest event, 0 if it has none (or is another tenant's)."""
        stmt = select(EVENTS.c.id).where(EVENTS.c.run_id == run_id)
        if tenant_id is not None:
            stmt = stmt.where(EVENTS.c.tenant_id == tenant_id)
        stmt = stmt.order_by(EVENTS.c.id.desc()).limit(1)
        async with translated(), self._engine.connect() as conn:
            latest = (await conn.execute(stmt)).scalar_one_or_none()
        return int(latest or 0)

    async def listen(self, on_notify: NotifyCallback, on_state: StateCallback) -> None:
        """LISTEN for new events until cancelled, on one connection of its own.

        `on_notify(run_id, event_id)` is called for each notification; `on_state(True)` once the
        LISTEN is in place (again), `on_state(False)` when the connection is lost. Notifications
        sent while no connection listened are lost, so a caller must read the table again after
        `on_state(True)`. Reconnects with backoff until it succeeds; never raises except on
        cancellation.
        """
        await RunEventListener(
            self._connect_args(), on_notify, on_state, self._backoff, self._connect_timeout_s
        ).run()

    def _connect_args(self) -> dict[str, Any]:
        # The pool's own URL-to-libpq translation, so the listener reaches exactly the database
        # the engine does (unix-socket hosts and query options included).
        _, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
        kwargs.pop("context", None)  # SQLAlchemy's adapters; the listener needs none
        kwargs["application_name"] = APPLICATION_NAME
        kwargs["connect_timeout"] = max(1, int(self._connect_timeout_s))
        return cast(dict[str, Any], kwargs)


class RunEventListener:
    """One dedicated autocommit connection running `LISTEN garrison_run_events`.

    Not pooled: a LISTEN belongs to its session, and a pooled connection would lose it on
    return. When the connection dies (a restart, `pg_terminate_backend`, a network cut) it
    reconnects with backoff. An idle connection is checked every `idle_check_s` with a query,
    so a connection that died silently is noticed rather than waited on forever.
    """

    def __init__(
        self,
        connect_args: dict[str, Any],
        on_notify: NotifyCallback,
        on_state: StateCallback,
        backoff: Backoff,
        connect_timeout_s: float,
        idle_check_s: float = 30.0,
    ) -> None:
        self._connect_args = connect_args
        self._on_notify = on_notify
        self._on_state = on_state
        self._backoff = backoff
        self._connect_timeout_s = connect_timeout_s
        self._idle_check_s = idle_check_s
        self._up = False

    async def run(self) -> None:
        failures = 0
        while True:
            self._up = False
            try:
                await self._listen()
            except (psycopg.Error, OSError) as exc:
                if self._up:
                    failures = 0
                    self._on_state(False)
                failures += 1
                delay = self._backoff.delay(failures)
                log.warning("run events listener: %s; reconnecting in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def _listen(self) -> None:
        """Connect, LISTEN and dispatch notifications until the connection fails (raises)."""
        conn = await _with_deadline(
            psycopg.AsyncConnection.connect(autocommit=True, **self._connect_args),
            self._connect_timeout_s,
        )
        async with conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self._up = True
            self._on_state(True)
            while True:
                async for notify in conn.notifies(timeout=self._idle_check_s):
                    self._dispatch(notify.payload)
                # Quiet for a while: prove the connection is alive (raises if it is not).
                await _with_deadline(conn.execute("SELECT 1"), self._connect_timeout_s)

    def _dispatch(self, payload: str) -> None:
        run_id, _, event_id = payload.partition(":")
        try:
            parsed = uuid.UUID(run_id), int(event_id)
        except ValueError:
            log.warning("ignoring a malformed run event notification: %r", payload)
            return
        self._on_notify(*parsed)


async def _with_deadline(work: Awaitable[T], seconds: float) -> T:
    try:
        return await asyncio.wait_for(work, seconds)
    except TimeoutError as exc:
        raise psycopg.OperationalError(f"no answer from the database within {seconds:g}s") from exc
