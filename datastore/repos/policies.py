"""Policy versions: appended under a per-scope lock, read back newest first.

A scope is a tenant (`agent_name` NULL) or one of its agents. Applying takes a transaction-level
advisory lock on the scope, so two concurrent applies get consecutive versions instead of a
unique-index error, and compares with the newest version's hash so re-applying the same file
writes nothing. Every new version is audited in its own transaction.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import Row, Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agent.domain import JSON, PolicyRecord
from datastore.errors import translated
from datastore.fastpath import FastPath
from datastore.repos.audit import append_entry
from datastore.schema import PolicyRow

POLICIES = cast(Table, PolicyRow.__table__)


# The newest version of each of the (at most) two scopes, in one indexed query. Workers run it
# once per claimed run, so it goes over the fast path (`datastore.fastpath`).
ACTIVE_SQL = """
SELECT DISTINCT ON (coalesce(agent_name, '')) *
FROM policies
WHERE tenant_id = %(tenant_id)s AND (agent_name IS NULL OR agent_name = %(agent)s)
ORDER BY coalesce(agent_name, ''), version DESC
"""


def _record(row: Row[Any]) -> PolicyRecord:
    return PolicyRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        agent_name=row.agent_name,
        version=row.version,
        source=row.source,
        document=row.document,
        sha256=row.sha256,
        applied_by=row.applied_by,
        applied_at=row.applied_at,
    )


def _scope(agent_name: str | None) -> Any:
    column = POLICIES.c.agent_name
    return column.is_(None) if agent_name is None else column == agent_name


class PolicyRepository:
    def __init__(self, engine: AsyncEngine, fast: FastPath) -> None:
        self._engine = engine
        self._fast = fast

    async def apply(
        self,
        tenant_id: uuid.UUID,
        agent_name: str | None,
        *,
        source: str,
        document: JSON,
        sha256: str,
        actor: str,
    ) -> tuple[PolicyRecord, bool]:
        async with translated(), self._engine.begin() as conn:
            lock = f"garrison.policy:{tenant_id}:{agent_name or ''}"
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": lock})
            newest = await self._newest(conn, tenant_id, agent_name)
            if newest is not None and newest.sha256 == sha256:
                return newest, False
            version = 1 if newest is None else newest.version + 1
            stmt = (
                insert(POLICIES)
                .values(
                    tenant_id=tenant_id,
                    agent_name=agent_name,
                    version=version,
                    source=source,
                    document=document,
                    sha256=sha256,
                    applied_by=actor,
                )
                .returning(*POLICIES.c)
            )
            record = _record((await conn.execute(stmt)).one())
            await append_entry(
                conn,
                tenant_id=tenant_id,
                actor=actor,
                action="policy.apply",
                object_type="policy",
                object_id=str(record.id),
                detail={"agent": agent_name, "version": version, "sha256": sha256},
            )
            return record, True

    async def _newest(
        self, conn: AsyncConnection, tenant_id: uuid.UUID, agent_name: str | None
    ) -> PolicyRecord | None:
        stmt = (
            select(POLICIES)
            .where(POLICIES.c.tenant_id == tenant_id, _scope(agent_name))
            .order_by(POLICIES.c.version.desc())
            .limit(1)
        )
        row = (await conn.execute(stmt)).first()
        return None if row is None else _record(row)

    async def active(self, tenant_id: uuid.UUID, agent_name: str | None) -> list[PolicyRecord]:
        rows = await self._fast.fetchall(ACTIVE_SQL, {"tenant_id": tenant_id, "agent": agent_name})
        return [_record(r) for r in rows]

    async def history(self, tenant_id: uuid.UUID, agent_name: str | None) -> list[PolicyRecord]:
        stmt = (
            select(POLICIES)
            .where(POLICIES.c.tenant_id == tenant_id, _scope(agent_name))
            .order_by(POLICIES.c.version.desc())
        )
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_record(r) for r in rows]

    async def version(
        self, tenant_id: uuid.UUID, agent_name: str | None, version: int
    ) -> PolicyRecord | None:
        stmt = select(POLICIES).where(
            POLICIES.c.tenant_id == tenant_id, _scope(agent_name), POLICIES.c.version == version
        )
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _record(row)
