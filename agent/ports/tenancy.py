"""Tenancy and administration: tenants, API keys, agent definitions, the audit log.

Every change an administrator makes through these stores takes the `actor` it is audited under
and appends the audit entry in the change's own transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from agent.domain import (
    JSON,
    AgentDefinition,
    ApiKey,
    AuditEntry,
    Principal,
    Role,
    Tenant,
)


class TenantStore(Protocol):
    async def create_tenant(self, name: str, *, actor: str | None = None) -> Tenant: ...
    async def get_tenant(self, name: str) -> Tenant | None: ...
    async def list_tenants(self) -> list[Tenant]: ...


class KeyStore(Protocol):
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
        """Store the key (None `access_tags`: the whole tenant), audited as `key.create`."""
        ...

    async def authenticate(self, key_hash: str) -> Principal | None:
        """The unrevoked key's principal, with its roles and access tags."""
        ...

    async def list_keys(self, tenant_id: uuid.UUID | None = None) -> list[ApiKey]: ...
    async def revoke_key(self, key_id: uuid.UUID, *, actor: str) -> ApiKey | None: ...


class AgentStore(Protocol):
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
    ) -> AgentDefinition: ...
    async def get_agent(self, tenant_id: uuid.UUID, name: str) -> AgentDefinition | None: ...
    async def get_agent_by_id(self, agent_id: uuid.UUID) -> AgentDefinition | None: ...
    async def list_agents(self, tenant_id: uuid.UUID | None = None) -> list[AgentDefinition]: ...


class AuditLog(Protocol):
    async def append(
        self,
        *,
        tenant_id: uuid.UUID | None,
        actor: str,
        action: str,
        object_type: str,
        object_id: str,
        detail: JSON,
    ) -> AuditEntry: ...
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
        """The entry of an object audited at most once (a step); None, and nothing written,
        when it has one already."""
        ...

    async def list_entries(self, tenant_id: uuid.UUID | None, limit: int) -> list[AuditEntry]: ...
