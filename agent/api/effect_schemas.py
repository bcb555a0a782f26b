"""The wire format of `GET /v1/runs/{id}/effects`: the side effects a run queued, and how each
delivery went. A client sees its own run's payloads (it asked for them) and the receiver's
recorded answer; dispatcher bookkeeping (lease holders) stays inside."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agent.api.schemas import Model
from agent.ports import OutboxItem, OutboxStatus


class EffectOut(Model):
    id: int
    step: int
    """The step that queued it; it exists because that step committed."""
    call_index: int
    idempotency_key: str
    """Sent with every delivery (`Idempotency-Key`, or the email's `Message-ID`)."""
    kind: str
    """`email` or `http`."""
    payload: dict[str, Any]
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime | None
    """When a pending row is tried next; null once delivered or failed."""
    last_error: str | None
    response: dict[str, Any] | None
    """The receiver's answer to the last attempt (HTTP status and the start of the body)."""
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def from_domain(cls, item: OutboxItem) -> EffectOut:
        live = item.status in (OutboxStatus.PENDING, OutboxStatus.DELIVERING)
        return cls(
            id=item.id,
            step=item.step_number,
            call_index=item.call_index,
            idempotency_key=item.idempotency_key,
            kind=item.kind,
            payload=item.payload,
            status=item.status,
            attempts=item.attempts,
            next_attempt_at=item.next_attempt_at if live else None,
            last_error=item.last_error,
            response=item.response,
            created_at=item.created_at,
            delivered_at=item.delivered_at,
        )


class EffectList(Model):
    data: list[EffectOut]
