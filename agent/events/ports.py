"""What the event stream needs from the datastore: a run's event log and a way to listen.

`datastore.repos.events.EventRepository` satisfies `EventStore`; its rows satisfy `RunEvent`
structurally, so neither side imports the other's types.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol


class RunEvent(Protocol):
    """A run's state change (`kind == "state"`) or committed step (`kind == "step"`)."""

    @property
    def id(self) -> int:
        """Increasing per run; what `Last-Event-ID` resumes after."""
        ...

    @property
    def run_id(self) -> uuid.UUID: ...
    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> str:
        """The run's status when the event was written."""
        ...

    @property
    def step_number(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def tool(self) -> str | None:
        """The step's tool (`step` events only)."""
        ...

    @property
    def error_code(self) -> str | None:
        """Why the step failed, if it did (`step` events only)."""
        ...


class EventStore(Protocol):
    async def events_after(
        self, run_id: uuid.UUID, after: int, tenant_id: uuid.UUID | None, limit: int
    ) -> Sequence[RunEvent]:
        """The run's events with id > `after`, oldest first; none for another tenant's run."""
        ...

    async def latest_event_id(self, run_id: uuid.UUID, tenant_id: uuid.UUID | None) -> int: ...

    async def listen(
        self, on_notify: Callable[[uuid.UUID, int], None], on_state: Callable[[bool], None]
    ) -> None:
        """Announce new events (run id, event id) until cancelled, reconnecting as needed;
        `on_state` says whether notifications are flowing. Never returns on its own."""
        ...
