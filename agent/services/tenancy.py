"""Tenants and their agent definitions; each change is audited under the caller's `actor`, in
the store's transaction."""

from __future__ import annotations

import re
from collections.abc import Sequence

from agent.domain import AgentDefinition, Tenant
from agent.errors import CallerError, NotFound
from agent.ports import AgentStore, TenantStore
from agent.settings import AgentSettings
from agent.tools import TOOL_NAMES

MAX_PARALLEL_CALLS = 8
"""Tool calls one decision may propose at most (migration 0009's check agrees)."""

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_name(kind: str, name: str) -> str:
    if not NAME.match(name):
        raise CallerError(
            f"{kind} name {name!r} must be 1-63 lowercase letters, digits, '-' or '_'"
        )
    return name


class TenancyService:
    def __init__(self, tenants: TenantStore, agents: AgentStore, settings: AgentSettings) -> None:
        self._tenants = tenants
        self._agents = agents
        self._settings = settings

    async def create_tenant(self, name: str, *, actor: str) -> Tenant:
        return await self._tenants.create_tenant(check_name("tenant", name), actor=actor)

    async def require_tenant(self, name: str) -> Tenant:
        tenant = await self._tenants.get_tenant(name)
        if tenant is None:
            raise NotFound(f"tenant {name!r} not found")
        return tenant

    async def list_tenants(self) -> list[Tenant]:
        return await self._tenants.list_tenants()

    async def put_agent(
        self,
        tenant_name: str,
        name: str,
        *,
        instructions: str,
        tools: Sequence[str] | None = None,
        model_role: str = "decide",
        max_steps: int | None = None,
        retrieval_k: int | None = None,
        parallel_calls: int = 1,
        actor: str,
    ) -> AgentDefinition:
        tenant = await self.require_tenant(tenant_name)
        check_name("agent", name)
        allowed = list(tools) if tools else ["search_documents", "finish"]
        unknown = sorted(set(allowed) - TOOL_NAMES)
        if unknown:
            raise CallerError(
                f"unknown tools: {', '.join(unknown)} (known: {', '.join(sorted(TOOL_NAMES))})"
            )
        if "finish" not in allowed:
            raise CallerError("an agent must be allowed the 'finish' tool, or it can never answer")
        if not instructions.strip():
            raise CallerError("instructions must not be empty")
        steps = max_steps if max_steps is not None else self._settings.default_max_steps
        k = retrieval_k if retrieval_k is not None else self._settings.default_retrieval_k
        if not 1 <= steps <= 200 or not 0 <= k <= 50:
            raise CallerError("max_steps must be 1..200 and retrieval_k 0..50")
        if not 1 <= parallel_calls <= MAX_PARALLEL_CALLS:
            raise CallerError(f"parallel_calls must be 1..{MAX_PARALLEL_CALLS}")
        return await self._agents.put_agent(
            tenant.id,
            name,
            instructions=instructions.strip(),
            allowed_tools=allowed,
            model_role=model_role,
            max_steps=steps,
            retrieval_k=k,
            parallel_calls=parallel_calls,
            actor=actor,
        )

    async def list_agents(self, tenant_name: str | None = None) -> list[AgentDefinition]:
        tenant_id = (await self.require_tenant(tenant_name)).id if tenant_name else None
        return await self._agents.list_agents(tenant_id)
