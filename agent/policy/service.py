"""Policies for the CLI: apply a file, show, diff and list versions, test a draft against runs.

Names come in (tenant, optional agent) and are resolved here; a policy for an agent needs the
agent to exist. Applying validates the file first (every problem with its line), then stores a
new version unless the newest one is byte-identical; the store audits it.
"""

from __future__ import annotations

import difflib
import hashlib
import uuid
from dataclasses import dataclass

from agent.domain import AgentDefinition, PolicyRecord, Run, Step, Tenant
from agent.errors import CallerError, NotFound
from agent.policy.compiled import compile_document
from agent.policy.file import parse_policy
from agent.policy.whatif import WhatIf, what_if
from agent.ports import AgentStore, PolicyStore, RunStore, TenantStore


@dataclass(frozen=True, slots=True)
class Applied:
    record: PolicyRecord
    created: bool
    """False when the newest version already had exactly this content: nothing was stored."""


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    before: str
    after: str
    text: str
    """A unified diff; empty when both sides are the same."""


def scope_label(tenant: str, agent: str | None) -> str:
    return tenant if agent is None else f"{tenant}/{agent}"


class PolicyService:
    def __init__(
        self, tenants: TenantStore, agents: AgentStore, policies: PolicyStore, runs: RunStore
    ) -> None:
        self._tenants = tenants
        self._agents = agents
        self._policies = policies
        self._runs = runs

    async def _tenant(self, name: str, agent: str | None) -> Tenant:
        tenant = await self._tenants.get_tenant(name)
        if tenant is None:
            raise NotFound(f"tenant {name!r} not found")
        if agent is not None and await self._agents.get_agent(tenant.id, agent) is None:
            raise NotFound(f"agent {agent!r} of tenant {name!r} not found")
        return tenant

    async def apply(
        self, tenant_name: str, agent: str | None, source: str, *, name: str, actor: str
    ) -> Applied:
        document = parse_policy(source, name=name)
        tenant = await self._tenant(tenant_name, agent)
        record, created = await self._policies.apply(
            tenant.id,
            agent,
            source=source,
            document=document.as_json(),
            sha256=hashlib.sha256(source.encode()).hexdigest(),
            actor=actor,
        )
        return Applied(record, created)

    async def show(self, tenant_name: str, agent: str | None, version: int | None) -> PolicyRecord:
        tenant = await self._tenant(tenant_name, agent)
        label = scope_label(tenant_name, agent)
        if version is None:
            history = await self._policies.history(tenant.id, agent)
            if not history:
                raise NotFound(f"{label} has no policy; apply one with `garrison policies apply`")
            return history[0]
        record = await self._policies.version(tenant.id, agent, version)
        if record is None:
            raise NotFound(f"{label} has no policy version {version}")
        return record

    async def history(self, tenant_name: str, agent: str | None) -> list[PolicyRecord]:
        tenant = await self._tenant(tenant_name, agent)
        return await self._policies.history(tenant.id, agent)

    async def diff(
        self,
        tenant_name: str,
        agent: str | None,
        *,
        draft: tuple[str, str] | None = None,
        from_version: int | None = None,
        to_version: int | None = None,
    ) -> PolicyDiff:
        """A stored version against a draft file (`draft` = (name, source)), or two stored
        versions (default: the one before the newest, and the newest)."""
        label = scope_label(tenant_name, agent)
        if draft is not None:
            parse_policy(draft[1], name=draft[0])  # diffing a file that cannot apply misleads
            base = await self._optional(tenant_name, agent, from_version)
            before = f"{label} v{base.version}" if base else f"{label} (no policy)"
            return _diff(before, base.source if base else "", draft[0], draft[1])
        newer = await self.show(tenant_name, agent, to_version)
        older_version = from_version if from_version is not None else newer.version - 1
        older = await self._optional(tenant_name, agent, older_version) if older_version else None
        if from_version is not None and older is None:
            raise NotFound(f"{label} has no policy version {from_version}")
        before = f"{label} v{older.version}" if older else f"{label} (no policy)"
        return _diff(before, older.source if older else "", f"{label} v{newer.version}",
                     newer.source)  # fmt: skip

    async def _optional(
        self, tenant_name: str, agent: str | None, version: int | None
    ) -> PolicyRecord | None:
        try:
            return await self.show(tenant_name, agent, version)
        except NotFound:
            if version is not None:
                raise
            return None

    async def test(
        self,
        source: str,
        *,
        name: str,
        tenant_name: str | None,
        agent: str | None,
        limit: int,
    ) -> WhatIf:
        """What `source` would decide differently about the most recent `limit` runs (of the
        tenant, or of every tenant when none is named)."""
        if not 1 <= limit <= 1000:
            raise CallerError("limit must be between 1 and 1000")
        if agent is not None and tenant_name is None:
            raise CallerError("an agent's draft policy needs its tenant (--tenant)")
        draft = compile_document(parse_policy(source, name=name))
        tenant_id: uuid.UUID | None = None
        if tenant_name is not None:
            tenant_id = (await self._tenant(tenant_name, agent)).id
        runs: list[Run] = await self._runs.list_runs(tenant_id, None, limit)
        agents: dict[uuid.UUID, AgentDefinition | None] = {}

        async def agent_of(agent_id: uuid.UUID) -> AgentDefinition | None:
            if agent_id not in agents:
                agents[agent_id] = await self._agents.get_agent_by_id(agent_id)
            return agents[agent_id]

        async def steps_of(run_id: uuid.UUID) -> list[Step]:
            return await self._runs.list_steps(run_id, None)

        return await what_if(
            draft, agent, runs, steps_of=steps_of, active_of=self._policies.active,
            agent_of=agent_of,
        )  # fmt: skip


def _diff(before: str, old: str, after: str, new: str) -> PolicyDiff:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), before, after
    )
    return PolicyDiff(before, after, "".join(lines))
