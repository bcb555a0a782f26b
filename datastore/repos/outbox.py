"""The outbox: side effects waiting for delivery, claimed by dispatchers under a lease.

Rows are written by `RunRepository.record_step` in the step's own transaction; this repository
only moves them along: claim (`FOR UPDATE SKIP LOCKED`, so dispatchers never block or double-
claim), then delivered, retried later or failed, each guarded by the claimant's id so a
dispatcher whose lease ran out cannot overwrite what its successor recorded.

While a row is `delivering`, `next_attempt_at` holds its lease expiry: one partial index
(`ix_outbox_due`) then finds both pending rows that are due and claimed rows whose dispatcher
died, with the same condition.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import Row, Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from agent.domain import JSON
from agent.ports import OutboxItem, OutboxStatus
from datastore.errors import translated
from datastore.repos.audit import append_entry
from datastore.repos.run_access import runs_within
from datastore.schema import OutboxRow, RunRow

OUTBOX = cast(Table, OutboxRow.__table__)
RUNS = cast(Table, RunRow.__table__)
_LIVE = (OutboxStatus.PENDING.value, OutboxStatus.DELIVERING.value)


def _item(row: Row[Any]) -> OutboxItem:
    return OutboxItem(
        id=row.id,
        tenant_id=row.tenant_id,
        run_id=row.run_id,
        step_number=row.step_number,
        call_index=row.call_index,
        idempotency_key=row.idempotency_key,
        kind=row.kind,
        payload=row.payload,
        status=OutboxStatus(row.status),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        locked_by=row.locked_by,
        last_error=row.last_error,
        response=row.response,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
    )


def _in(seconds: float) -> Any:
    return func.now() + func.make_interval(0, 0, 0, 0, 0, 0, seconds)


class OutboxRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def claim_due(
        self, dispatcher_id: str, limit: int, lease_seconds: float, max_attempts: int
    ) -> list[OutboxItem]:
        due = (OUTBOX.c.status.in_(_LIVE), OUTBOX.c.next_attempt_at <= func.now())
        # A row still `delivering` after its lease saw its dispatcher die mid-delivery. After
        # the last allowed attempt it is not tried again: a payload that kills dispatchers
        # must not kill them forever.
        abandoned = (
            select(OUTBOX.c.id)
            .where(
                *due,
                OUTBOX.c.status == OutboxStatus.DELIVERING.value,
                OUTBOX.c.attempts >= max_attempts,
            )
            .with_for_update(skip_locked=True)
            .cte("abandoned")
        )
        give_up = (
            update(OUTBOX)
            .where(OUTBOX.c.id == abandoned.c.id)
            .values(
                status=OutboxStatus.FAILED.value,
                last_error=f"abandoned: no dispatcher finished any of {max_attempts} attempt(s)",
                locked_by=None,
                locked_until=None,
            )
        )
        candidates = (
            select(OUTBOX.c.id)
            .where(*due)
            .order_by(OUTBOX.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("candidates")
        )
        lease = _in(lease_seconds)
        claim = (
            update(OUTBOX)
            .where(OUTBOX.c.id == candidates.c.id)
            .values(
                status=OutboxStatus.DELIVERING.value,
                locked_by=dispatcher_id,
                locked_until=lease,
                next_attempt_at=lease,
                attempts=OUTBOX.c.attempts + 1,
            )
            .returning(*OUTBOX.c)
        )
        async with translated(), self._engine.begin() as conn:
            await conn.execute(give_up)
            rows = (await conn.execute(claim)).all()
        return sorted((_item(r) for r in rows), key=lambda i: i.id)

    async def _settle(self, item_id: int, dispatcher_id: str, **values: Any) -> bool:
        # Only the current claimant may settle a row: after a lost lease, another dispatcher's
        # outcome is the one that counts.
        stmt = (
            update(OUTBOX)
            .where(
                OUTBOX.c.id == item_id,
                OUTBOX.c.locked_by == dispatcher_id,
                OUTBOX.c.status == OutboxStatus.DELIVERING.value,
            )
            .values(locked_by=None, locked_until=None, **values)
            .returning(OUTBOX.c.id)
        )
        async with translated(), self._engine.begin() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def mark_delivered(self, item_id: int, dispatcher_id: str, response: JSON) -> bool:
        return await self._settle(
            item_id,
            dispatcher_id,
            status=OutboxStatus.DELIVERED.value,
            response=response,
            delivered_at=func.now(),
        )

    async def retry_later(
        self, item_id: int, dispatcher_id: str, error: str, response: JSON | None, delay_s: float
    ) -> bool:
        return await self._settle(
            item_id,
            dispatcher_id,
            status=OutboxStatus.PENDING.value,
            last_error=error,
            response=response,
            next_attempt_at=_in(delay_s),
        )

    async def mark_failed(
        self, item_id: int, dispatcher_id: str, error: str, response: JSON | None
    ) -> bool:
        return await self._settle(
            item_id,
            dispatcher_id,
            status=OutboxStatus.FAILED.value,
            last_error=error,
            response=response,
        )

    async def get_item(self, item_id: int, tenant_id: uuid.UUID | None) -> OutboxItem | None:
        stmt = select(OUTBOX).where(OUTBOX.c.id == item_id)
        if tenant_id is not None:
            stmt = stmt.where(OUTBOX.c.tenant_id == tenant_id)
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _item(row)

    async def list_items(
        self,
        *,
        tenant_id: uuid.UUID | None,
        run_id: uuid.UUID | None = None,
        status: OutboxStatus | None = None,
        limit: int = 100,
        access_tags: tuple[str, ...] | None = None,
    ) -> list[OutboxItem]:
        stmt = select(OUTBOX).limit(limit)
        if tenant_id is not None:
            stmt = stmt.where(OUTBOX.c.tenant_id == tenant_id)
        if access_tags is not None:
            # Only the effects of runs the restricted key may see: their payloads come from
            # what those runs read.
            visible = select(RUNS.c.id).where(*runs_within(RUNS.c.access_tags, access_tags))
            stmt = stmt.where(OUTBOX.c.run_id.in_(visible))
        if status is not None:
            stmt = stmt.where(OUTBOX.c.status == status.value)
        if run_id is not None:
            # A run's effects read in the order its steps asked for them.
            stmt = stmt.where(OUTBOX.c.run_id == run_id).order_by(
                OUTBOX.c.step_number, OUTBOX.c.call_index
            )
        else:
            stmt = stmt.order_by(OUTBOX.c.id.desc())
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_item(r) for r in rows]

    async def requeue(self, item_id: int, *, actor: str) -> OutboxItem | None:
        stmt = (
            update(OUTBOX)
            .where(OUTBOX.c.id == item_id, OUTBOX.c.status == OutboxStatus.FAILED.value)
            .values(
                status=OutboxStatus.PENDING.value,
                attempts=0,
                next_attempt_at=func.now(),
                locked_by=None,
                locked_until=None,
            )
            .returning(*OUTBOX.c)
        )
        async with translated(), self._engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
            if row is None:
                return None
            item = _item(row)
            # An operator's decision, audited in its own transaction.
            await append_entry(
                conn,
                tenant_id=item.tenant_id,
                actor=actor,
                action="outbox.retry",
                object_type="outbox",
                object_id=str(item.id),
                detail={"idempotency_key": item.idempotency_key, "kind": item.kind},
            )
        return item
