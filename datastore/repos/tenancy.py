"""Tenants, API keys and agent definitions.

Each change is an administrator's and goes into the audit log in the same transaction as the
change itself (`append_entry`), so neither can be committed without the other.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, Select, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from agent.domain import AgentDefinition, ApiKey, Principal, Role, Tenant
from datastore.errors import translated
from datastore.fastpath import FastPath
from datastore.repos.audit import append_entry
from datastore.schema import AgentRow, ApiKeyRow, TenantRow

# `last_used_at` is advisory; writing it on every request would add a commit to each call.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _tenant(row: Row[Any]) -> Tenant:
    return Tenant(id=row.id, name=row.name, created_at=row.created_at)


def _key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        tenant_id=row.tenant_id,
        tenant_name=row.tenant_name,
        name=row.name,
        prefix=row.prefix,
        roles=tuple(Role(r) for r in row.roles),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        access_tags=_tags(row.access_tags),
    )


def _tags(stored: list[str] | None) -> tuple[str, ...] | None:
    return None if stored is None else tuple(stored)


def _agent(row: Row[Any]) -> AgentDefinition:
    return AgentDefinition(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        instructions=row.instructions,
        allowed_tools=tuple(row.allowed_tools),
        model_role=row.model_role,
        max_steps=row.max_steps,
        retrieval_k=row.retrieval_k,
        version=row.version,
        parallel_calls=row.parallel_calls,
        created_at=row.created_at,
    )


class TenantRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_tenant(self, name: str, *, actor: str | None = None) -> Tenant:
        """The tenant, created unless it exists. A creation is audited under `actor`; None
        audits nothing and is for benchmarks seeding a database of their own."""
        stmt = (
            insert(TenantRow)
            .values(id=uuid.uuid4(), name=name)
            .on_conflict_do_nothing(index_elements=[TenantRow.name])
            .returning(TenantRow.id)
        )
        async with translated(), self._engine.begin() as conn:
            created = (await conn.execute(stmt)).first()
            row = (await conn.execute(select(TenantRow).where(TenantRow.name == name))).one()
            if created is not None and actor is not None:
                await append_entry(
                    conn,
                    tenant_id=row.id,
                    actor=actor,
                    action="tenant.create",
                    object_type="tenant",
                    object_id=str(row.id),
                    detail={"name": name},
                )
        return _tenant(row)

    async def get_tenant(self, name: str) -> Tenant | None:
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(select(TenantRow).where(TenantRow.name == name))).first()
        return None if row is None else _tenant(row)

    async def list_tenants(self) -> list[Tenant]:
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(select(TenantRow).order_by(TenantRow.name))).all()
        return [_tenant(r) for r in rows]


class KeyRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @staticmethod
    def _select() -> Select[Any]:
        return select(ApiKeyRow.__table__, TenantRow.name.label("tenant_name")).join(
            TenantRow, TenantRow.id == ApiKeyRow.tenant_id
        )

    async def create_key(
        self,
        tenant_id: uuid.UUID,
        name: str,
        roles: Sequence[Role],
        key_hash: str,
        prefix: str,
        *,
        actor: str,
        access_tags: tuple[str, ...] | None = None,
    ) -> ApiKey:
        key_id = uuid.uuid4()
        role_names = [str(r) for r in roles]
        tags = None if access_tags is None else list(access_tags)
        async with translated(), self._engine.begin() as conn:
            await conn.execute(
                insert(ApiKeyRow).values(
                    id=key_id,
                    tenant_id=tenant_id,
                    name=name,
                    prefix=prefix,
                    key_hash=key_hash,
                    roles=role_names,
                    access_tags=tags,
                )
            )
            await append_entry(
                conn,
                tenant_id=tenant_id,
                actor=actor,
                action="key.create",
                object_type="api_key",
                object_id=str(key_id),
                detail={"name": name, "roles": role_names, "prefix": prefix, "access_tags": tags},
            )
        return await self._get(key_id)

    async def _get(self, key_id: uuid.UUID) -> ApiKey:
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(self._select().where(ApiKeyRow.id == key_id))).one()
        return _key(row)

    async def authenticate(self, key_hash: str) -> Principal | None:
        stmt = select(
            ApiKeyRow.id,
            ApiKeyRow.tenant_id,
            ApiKeyRow.roles,
            ApiKeyRow.access_tags,
            ApiKeyRow.last_used_at,
        ).where(ApiKeyRow.key_hash == key_hash, ApiKeyRow.revoked_at.is_(None))
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
            if row is None:
                return None
            now = datetime.now(UTC)
            if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
                await conn.execute(
                    update(ApiKeyRow).where(ApiKeyRow.id == row.id).values(last_used_at=func.now())
                )
                await conn.commit()
        return Principal(
            tenant_id=row.tenant_id,
            key_id=row.id,
            roles=tuple(Role(r) for r in row.roles),
            access_tags=_tags(row.access_tags),
        )

    async def list_keys(self, tenant_id: uuid.UUID | None = None) -> list[ApiKey]:
        stmt = self._select().order_by(TenantRow.name, ApiKeyRow.created_at)
        if tenant_id is not None:
            stmt = stmt.where(ApiKeyRow.tenant_id == tenant_id)
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_key(r) for r in rows]

    async def revoke_key(self, key_id: uuid.UUID, *, actor: str) -> ApiKey | None:
        """The key, revoked now (audited) or earlier (nothing changes); None if unknown."""
        stmt = (
            update(ApiKeyRow)
            .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
            .values(revoked_at=func.now())
            .returning(ApiKeyRow.tenant_id, ApiKeyRow.name)
        )
        async with translated(), self._engine.begin() as conn:
            revoked = (await conn.execute(stmt)).first()
            if revoked is not None:
                await append_entry(
                    conn,
                    tenant_id=revoked.tenant_id,
                    actor=actor,
                    action="key.revoke",
                    object_type="api_key",
                    object_id=str(key_id),
                    detail={"name": revoked.name},
                )
            row = (await conn.execute(self._select().where(ApiKeyRow.id == key_id))).first()
        return None if row is None else _key(row)


class AgentRepository:
    def __init__(self, engine: AsyncEngine, fast: FastPath) -> None:
        self._engine = engine
        self._fast = fast

    async def put_agent(
        self,
        tenant_id: uuid.UUID,
        name: str,
        *,
        instructions: str,
        allowed_tools: Sequence[str],
        model_role: str,
        max_steps: int,
        retrieval_k: int,
        parallel_calls: int = 1,
        actor: str | None = None,
    ) -> AgentDefinition:
        """Create the agent, or replace its definition and bump its version; audited under
        `actor` (None audits nothing: benchmarks seeding a database of their own)."""
        values = {
            "instructions": instructions,
            "allowed_tools": list(allowed_tools),
            "model_role": model_role,
            "max_steps": max_steps,
            "retrieval_k": retrieval_k,
            "parallel_calls": parallel_calls,
        }
        stmt = (
            insert(AgentRow)
            .values(id=uuid.uuid4(), tenant_id=tenant_id, name=name, version=1, **values)
            .on_conflict_do_update(
                index_elements=[AgentRow.tenant_id, AgentRow.name],
                set_={**values, "version": AgentRow.version + 1},
            )
            .returning(*AgentRow.__table__.c)
        )
        async with translated(), self._engine.begin() as conn:
            row = (await conn.execute(stmt)).one()
            if actor is not None:
                await append_entry(
                    conn,
                    tenant_id=tenant_id,
                    actor=actor,
                    action="agent.put",
                    object_type="agent",
                    object_id=str(row.id),
                    detail={"name": name, "version": row.version, "tools": list(allowed_tools)},
                )
        return _agent(row)

    # Both lookups run once per submitted or claimed run: one prepared statement each.
    async def get_agent(self, tenant_id: uuid.UUID, name: str) -> AgentDefinition | None:
        row = await self._fast.fetchone(
            "SELECT * FROM agents WHERE tenant_id = %(tenant_id)s AND name = %(name)s",
            {"tenant_id": tenant_id, "name": name},
        )
        return None if row is None else _agent(row)

    async def get_agent_by_id(self, agent_id: uuid.UUID) -> AgentDefinition | None:
        row = await self._fast.fetchone("SELECT * FROM agents WHERE id = %(id)s", {"id": agent_id})
        return None if row is None else _agent(row)

    async def list_agents(self, tenant_id: uuid.UUID | None = None) -> list[AgentDefinition]:
        stmt = select(AgentRow).order_by(AgentRow.tenant_id, AgentRow.name)
        if tenant_id is not None:
            stmt = stmt.where(AgentRow.tenant_id == tenant_id)
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_agent(r) for r in rows]
