"""The audit log: append-only (a trigger refuses UPDATE and DELETE) and hash-chained.

This module owns the chain's format: which fields of an entry are hashed, how they are encoded,
and how each entry names the one before it. Appending (`append_entry`, inside the caller's
transaction; `append_once` for an object with at most one entry, a step) and verifying
(`AuditRepository.verify`) both go through `entry_fields` and `entry_hash`, so the two can
never disagree about what an entry's hash covers.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Row, Table, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agent.domain import JSON, AuditEntry, ChainBreak, ChainReport
from datastore.errors import translated
from datastore.schema import AuditRow

AUDIT = cast(Table, AuditRow.__table__)
GENESIS = "0" * 64
# Appends are serialised so each entry chains to exactly one predecessor.
AUDIT_LOCK_KEY = 0x6A7272_A0D
VERIFY_BATCH = 2000
"""Entries read per round trip when walking the whole log (keyset pages: no long snapshot)."""

ONCE_TYPES = frozenset({"step"})
"""Object types with at most one entry each (`uq_audit_log_step`, migration 0010)."""

ALTERED = "audit_entry_altered"
BROKEN = "audit_chain_broken"


def entry_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def entry_fields(
    *,
    tenant_id: uuid.UUID | None,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    detail: JSON,
    created_at: datetime,
) -> dict[str, Any]:
    """What an entry's hash covers. The timestamp is rendered in UTC whatever the session's
    time zone, so the hash recomputed from a row read back equals the one written."""
    return {
        "tenant_id": str(tenant_id) if tenant_id else None,
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "detail": detail,
        "created_at": created_at.astimezone(UTC).isoformat(),
    }


def recompute(entry: AuditEntry) -> str:
    """The hash `entry` should carry, from its content and the predecessor it names."""
    if entry.created_at is None:
        raise ValueError(f"audit entry {entry.id} has no timestamp")
    fields = entry_fields(
        tenant_id=entry.tenant_id,
        actor=entry.actor,
        action=entry.action,
        object_type=entry.object_type,
        object_id=entry.object_id,
        detail=entry.detail,
        created_at=entry.created_at,
    )
    return entry_hash(entry.prev_hash, fields)


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
        prev_hash=row.prev_hash,
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
    (or roll back) together.

    It takes a transaction-scoped lock that every append waits for, until the caller commits:
    call it as the transaction's last statement, so the lock is held for as short a time as
    possible."""
    await _lock(conn)
    return await _insert(conn, tenant_id, actor, action, object_type, object_id, detail)


async def append_once(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID | None,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    detail: JSON,
) -> AuditEntry | None:
    """Append the one entry of an object audited at most once (a step), or nothing, returning
    None, when it has one already: appended twice (the live path and the sweep racing, say),
    it is written once.

    The check runs under the lock every append takes, so two appends of one object serialise
    and the second sees the first's committed entry (each statement reads a fresh snapshot,
    taken after the lock was granted, and a lock is released only after its transaction is
    visible); nothing is inserted, so the chain's head does not move. The unique index
    `uq_audit_log_step` backs this up against any writer that would bypass the lock."""
    if object_type not in ONCE_TYPES:
        raise ValueError(f"{object_type!r} objects are not indexed for a once-only entry")
    await _lock(conn)
    found = await conn.execute(
        select(AUDIT.c.id)
        .where(AUDIT.c.object_type == object_type, AUDIT.c.object_id == object_id)
        .limit(1)
    )
    if found.first() is not None:
        return None
    return await _insert(conn, tenant_id, actor, action, object_type, object_id, detail)


async def _lock(conn: AsyncConnection) -> None:
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})


async def _insert(
    conn: AsyncConnection,
    tenant_id: uuid.UUID | None,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    detail: JSON,
) -> AuditEntry:
    """Chain a new entry to the head; only under the lock (`_lock`), held to commit."""
    created_at = datetime.now(UTC)
    fields = entry_fields(
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        detail=detail,
        created_at=created_at,
    )
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


def check_link(entry: AuditEntry, previous: AuditEntry | None) -> ChainBreak | None:
    """Whether `entry` follows `previous` (None: it is the first) and still matches its hash."""
    expected = previous.hash if previous is not None else GENESIS
    if entry.prev_hash != expected:
        after = f"entry {previous.id}" if previous is not None else "the start of the log"
        return ChainBreak(
            entry.id,
            BROKEN,
            f"audit entry {entry.id} does not follow {after}: an entry between them was "
            f"deleted, or {after} was rewritten",
        )
    if recompute(entry) != entry.hash:
        return ChainBreak(
            entry.id,
            ALTERED,
            f"audit entry {entry.id} ({entry.action} by {entry.actor}) no longer matches its "
            "hash: it was changed after it was written",
        )
    return None


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

    async def append_once(
        self,
        *,
        tenant_id: uuid.UUID | None,
        actor: str,
        action: str,
        object_type: str,
        object_id: str,
        detail: JSON,
    ) -> AuditEntry | None:
        async with translated(), self._engine.begin() as conn:
            return await append_once(
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

    async def get_entry(self, entry_id: int) -> AuditEntry | None:
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(select(AUDIT).where(AUDIT.c.id == entry_id))).first()
        return None if row is None else _entry(row)

    async def entries_after(
        self,
        after_id: int,
        limit: int,
        *,
        since: datetime | None = None,
        tenant_id: uuid.UUID | None = None,
    ) -> list[AuditEntry]:
        """Up to `limit` entries with ids above `after_id`, oldest first (a keyset page)."""
        stmt = (
            select(AUDIT)
            .where(AUDIT.c.id > after_id, *_filters(since, tenant_id))
            .order_by(AUDIT.c.id)
            .limit(limit)
        )
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_entry(r) for r in rows]

    async def count_entries(
        self, *, since: datetime | None = None, tenant_id: uuid.UUID | None = None
    ) -> int:
        stmt = select(func.count()).select_from(AUDIT).where(*_filters(since, tenant_id))
        async with translated(), self._engine.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def verify(
        self, progress: Callable[[int], None] | None = None, batch: int = VERIFY_BATCH
    ) -> ChainReport:
        """Recompute the whole chain, oldest first, and stop at the first entry that breaks it.

        Entries appended while this runs are checked too when their page is read; ids may have
        gaps (a rolled-back append uses one up), which is not a break: only the hashes link.
        """
        previous: AuditEntry | None = None
        checked = 0
        while page := await self.entries_after(previous.id if previous else 0, batch):
            for entry in page:
                checked += 1
                broken = check_link(entry, previous)
                if broken is not None:
                    head = previous
                    return ChainReport(
                        checked, head.id if head else None, head.hash if head else None, broken
                    )
                previous = entry
            if progress is not None:
                progress(checked)
        return ChainReport(
            checked, previous.id if previous else None, previous.hash if previous else None
        )


def _filters(since: datetime | None, tenant_id: uuid.UUID | None) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    if since is not None:
        found.append(AUDIT.c.created_at >= since)
    if tenant_id is not None:
        found.append(AUDIT.c.tenant_id == tenant_id)
    return found
