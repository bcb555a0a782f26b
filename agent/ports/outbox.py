"""The outbox: side effects waiting for (or done with) delivery."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from agent.domain import (
    JSON,
)


class OutboxStatus(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    """Claimed by a dispatcher; claimable again once its lease runs out (the dispatcher died)."""
    DELIVERED = "delivered"
    FAILED = "failed"
    """Gave up (a permanent refusal, or `outbox_max_attempts`); an operator may requeue it."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One side effect in the outbox, as the dispatcher, the CLI and the API see it."""

    id: int
    tenant_id: uuid.UUID
    run_id: uuid.UUID
    step_number: int
    call_index: int
    idempotency_key: str
    kind: str
    """`email` or `http`."""
    payload: JSON
    status: OutboxStatus
    attempts: int
    """Deliveries started so far, including ones a dead dispatcher never finished."""
    next_attempt_at: datetime
    locked_by: str | None
    last_error: str | None
    response: JSON | None
    """What the receiver answered on the last attempt (HTTP status and body, SMTP refusals)."""
    created_at: datetime
    delivered_at: datetime | None


class OutboxStore(Protocol):
    async def claim_due(
        self, dispatcher_id: str, limit: int, lease_seconds: float, max_attempts: int
    ) -> list[OutboxItem]:
        """Lease up to `limit` due rows (pending and due, or delivering with an expired lease),
        counting an attempt for each; rows whose dispatcher died on the last allowed attempt
        are marked failed instead."""
        ...

    async def mark_delivered(self, item_id: int, dispatcher_id: str, response: JSON) -> bool:
        """False when the lease was lost (another dispatcher owns the row now)."""
        ...

    async def retry_later(
        self, item_id: int, dispatcher_id: str, error: str, response: JSON | None, delay_s: float
    ) -> bool: ...
    async def mark_failed(
        self, item_id: int, dispatcher_id: str, error: str, response: JSON | None
    ) -> bool: ...
    async def get_item(self, item_id: int, tenant_id: uuid.UUID | None) -> OutboxItem | None: ...
    async def list_items(
        self,
        *,
        tenant_id: uuid.UUID | None,
        run_id: uuid.UUID | None = None,
        status: OutboxStatus | None = None,
        limit: int = 100,
        access_tags: tuple[str, ...] | None = None,
    ) -> list[OutboxItem]:
        """With `access_tags`, only the effects of runs that key may see."""
        ...

    async def requeue(self, item_id: int, *, actor: str) -> OutboxItem | None:
        """A failed row back to pending, due now, with its attempts reset; None if the row is
        not failed (or does not exist)."""
        ...
