"""The audit log: append-only (a trigger refuses UPDATE and DELETE) and hash-chained."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Row, Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agent.domain import JSON, AuditEntry
from datastore.errors import translated
from datastore.schema import AuditRow

AUDIT = cast(Table, AuditRow.__table__)
GENESIS = "0" * 64
# Appends are serialised so each entry chains to exactly one predecessor.
AUDIT_LOCK_KEY = 0x6A7272_A0D


def entry_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def _entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        tenant_id=row.tenant_id,
        actor=row.actor,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        detail=row.detail,
        created_at=row.created_at,
        hash=row.hash,
    )


async def append_entry(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID | None,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    detail: JSON,
) -> AuditEntry:
    """Append one entry inside the caller's transaction, so a change and its audit entry commit
    (or roll back) together."""
    created_at = datetime.now(UTC)
    fields = {
        "tenant_id": str(tenant_id) if tenant_id else None,
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "detail": detail,
        "created_at": created_at.isoformat(),
    }
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
    prev = (
        await conn.execute(select(AUDIT.c.hash).order_by(AUDIT.c.id.desc()).limit(1))
    ).scalar_one_or_none() or GENESIS
    row = (
        await conn.execute(
            insert(AUDIT)
            .values(
                tenant_id=tenant_id,
                actor=actor,
                action=action,
                object_type=object_type,
                object_id=object_id,
                detail=detail,
                created_at=created_at,
                prev_hash=prev,
                hash=entry_hash(prev, fields),
            )
            .returning(*AUDIT.c)
        )
    ).one()
    return _entry(row)


class AuditRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def append(
        self,
        *,
        tenant_id: uuid.UUID | None,
        actor: str,
        action: str,
        object_type: str,
        object_id: str,
        detail: JSON,
    ) -> AuditEntry:
        async with translated(), self._engine.begin() as conn:
            return await append_entry(
                conn,
                tenant_id=tenant_id,
                actor=actor,
                action=action,
                object_type=object_type,
                object_id=object_id,
                detail=detail,
            )

    async def list_entries(self, tenant_id: uuid.UUID | None, limit: int) -> list[AuditEntry]:
        stmt = select(AUDIT).order_by(AUDIT.c.id.desc()).limit(limit)
        if tenant_id is not None:
            stmt = stmt.where(AUDIT.c.tenant_id == tenant_id)
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_entry(r) for r in rows]
