"""Following a run's events: the backlog after a cursor, then live events, until the run ends.

`EventStream.open` checks that the run exists for the caller (so an API can answer 404 before it
starts streaming); `Watch.follow` then yields the run's events in id order. It subscribes to the
hub *before* it reads the backlog, so an event committed between the two is announced to a
subscription that already exists. Every wake-up, and every poll when notifications are not
flowing, reads the table after the last id sent: the table decides order and completeness, and
reading strictly after the last id means nothing is sent twice.

A watch ends after the run's terminal state event, or at once when the run was already terminal
and the caller has seen everything. It also ends when the hub shuts down; the caller can resume
from the last id it got.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from agent.domain import Run, RunStatus
from agent.errors import CallerError, NotFound
from agent.events.hub import EventHub, Subscription
from agent.events.ports import EventStore, RunEvent
from agent.events.settings import EventSettings
from agent.ports import RunStore
from datastore.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

PAGE = 200
"""Events read per query; a longer backlog is read page after page without waiting."""
MAX_EVENT_ID = 2**63 - 1
"""Event ids are Postgres bigints; a larger cursor is a caller error, not a database one."""


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing happened for the heartbeat interval: a transport may send a keep-alive."""


IDLE = Idle()


def is_terminal(event: RunEvent) -> bool:
    return event.kind == "state" and RunStatus(event.status).terminal


class EventStream:
    """Opens watches on runs' events, sharing one hub (one LISTEN connection) per process."""

    def __init__(
        self, runs: RunStore, events: EventStore, hub: EventHub, settings: EventSettings
    ) -> None:
        self._runs = runs
        self._events = events
        self._settings = settings
        self.hub = hub

    async def open(
        self,
        run_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        *,
        after: int | None = None,
        from_now: bool = False,
        access_tags: tuple[str, ...] | None = None,
    ) -> Watch:
        """A watch of the run's events with id > `after` (all of them when None), or of those
        still to come with `from_now`. `NotFound` for an unknown or another tenant's run, or
        one a restricted key (`access_tags`) may not see; a run's scope never changes, so the
        watch need not check it again."""
        if after is not None and not 0 <= after <= MAX_EVENT_ID:
            raise CallerError(f"an event id is between 0 and {MAX_EVENT_ID}")
        run = await self._runs.get_run(run_id, tenant_id, access_tags)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        if from_now:
            after = await self._events.latest_event_id(run_id, tenant_id)
        return Watch(run, tenant_id, after or 0, self._runs, self._events, self.hub, self._settings)

    async def aclose(self) -> None:
        await self.hub.aclose()


class Watch:
    def __init__(
        self,
        run: Run,
        tenant_id: uuid.UUID | None,
        after: int,
        runs: RunStore,
        events: EventStore,
        hub: EventHub,
        settings: EventSettings,
    ) -> None:
        self.run = run
        """The run as it was when the watch was opened."""
        self.last_id = after
        """The id of the last event yielded (or the cursor the watch started after)."""
        self._tenant_id = tenant_id
        self._runs = runs
        self._events = events
        self._hub = hub
        self._heartbeat_s = settings.events_heartbeat_s
        self._poll_s = settings.events_poll_s

    async def follow(self) -> AsyncGenerator[RunEvent | Idle, None]:
        """The run's events in id order, with `IDLE` after each quiet heartbeat interval."""
        # Observed before the first read: if the run was terminal then, its final events are
        # already in the table and the first reads return them.
        ended = self.run.status.terminal
        quiet_since = time.monotonic()
        with self._hub.subscribe(self.run.id) as subscription:
            while True:
                subscription.clear()
                page = await self._read()
                for event in page or ():
                    self.last_id = event.id
                    yield event
                    if is_terminal(event):
                        return
                if page:
                    quiet_since = time.monotonic()
                if page is not None and len(page) == PAGE:
                    continue  # a long backlog: keep reading
                if ended or subscription.closed:
                    return
                woken = await subscription.wait(self._wait_s(subscription, page, quiet_since))
                if subscription.closed:
                    return
                if not woken:
                    # No notification: look at the run itself before the next read, so a run
                    # whose end was never announced (or lies before the cursor) ends the watch.
                    ended = await self._ended()
                    if time.monotonic() - quiet_since >= self._heartbeat_s:
                        yield IDLE
                        quiet_since = time.monotonic()

    def _wait_s(
        self, subscription: Subscription, page: list[RunEvent] | None, quiet_since: float
    ) -> float:
        until_heartbeat = self._heartbeat_s - (time.monotonic() - quiet_since)
        if subscription.listening and page is not None:
            return until_heartbeat
        # Notifications are not flowing, or the database did not answer: poll.
        return min(self._poll_s, until_heartbeat)

    async def _read(self) -> list[RunEvent] | None:
        """The next page of events, or None while the database is unreachable (the watch
        keeps waiting rather than failing: the client would only have to reconnect)."""
        try:
            return list(
                await self._events.events_after(self.run.id, self.last_id, self._tenant_id, PAGE)
            )
        except DatabaseUnavailable as exc:
            log.warning("run %s events: %s; retrying", self.run.id, exc.message)
            return None

    async def _ended(self) -> bool:
        try:
            run = await self._runs.get_run(self.run.id, self._tenant_id)
        except DatabaseUnavailable:
            return False
        return run is None or run.status.terminal
