"""The wire format of `GET /v1/runs/{id}/events`: one JSON object per Server-Sent Event.

Each event goes out as `id: <event id>`, `event: <kind>` and `data: <RunEventOut as JSON>`; a
quiet stream sends `: heartbeat` comments.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, cast

from agent.api.schemas import Model
from agent.domain import RunStatus
from agent.events import RunEvent

EventKind = Literal["state", "step"]


class RunEventOut(Model):
    id: int
    """Increases along the run's events; send it back as `Last-Event-ID` (or `?after=`) to
    resume right after it."""
    run_id: uuid.UUID
    kind: EventKind
    """`state`: the run changed status; `step`: the run committed a step."""
    status: RunStatus
    """The run's status when this happened. A `state` event with a final status
    (`succeeded`, `failed`, `cancelled`, `budget_exhausted`) is the stream's last."""
    step: int
    """Steps the run had committed at that moment; for a `step` event, that step's number."""
    created_at: datetime
    tool: str | None = None
    """The tool the step ran (`step` events only)."""
    error_code: str | None = None
    """Why the step failed, if it did (`step` events only)."""

    @classmethod
    def from_event(cls, event: RunEvent) -> RunEventOut:
        return cls(
            id=event.id,
            run_id=event.run_id,
            kind=cast(EventKind, event.kind),
            status=RunStatus(event.status),
            step=event.step_number,
            created_at=event.created_at,
            tool=event.tool,
            error_code=event.error_code,
        )
