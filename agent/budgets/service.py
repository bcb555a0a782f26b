"""Configuring budgets and reading their use: what `garrison budgets` calls.

A rule is identified by its scope (a tenant, one of its API keys, or one of its agents) and its
period (`run` or `day`); setting it again replaces its limits. Every change is audited in its own
transaction and drops this process's cached rules of the tenant (other processes see it within
the cache TTL).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

from agent.budgets.directory import BudgetDirectory
from agent.budgets.model import BudgetRule, DailyUsage, Limits, Period, Scope, ScopeKind
from agent.budgets.ports import BudgetStore
from agent.domain import Tenant
from agent.errors import CallerError, NotFound
from agent.ports import AgentStore, KeyStore, TenantStore

MAX_LIMIT = 10**15
"""Far above any real budget; keeps values inside bigint with room for sums."""


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A rule and, for a daily one, its counters on the day asked for."""

    rule: BudgetRule
    usage: DailyUsage | None = None


def check_limits(period: Period, limits: Limits) -> Limits:
    if limits.empty:
        raise CallerError("give at least one limit (tokens, steps, tool calls or wall time)")
    if period is Period.DAY and limits.wall_s is not None:
        raise CallerError("wall time is limited per run only (a day has no start to measure from)")
    for name, value, least in (
        ("tokens", limits.tokens, 1),
        ("steps", limits.steps, 1),
        ("tool calls", limits.tool_calls, 0),
    ):
        if value is not None and not least <= value <= MAX_LIMIT:
            raise CallerError(f"the {name} limit must be between {least} and {MAX_LIMIT}")
    if limits.wall_s is not None and not 0 < limits.wall_s <= 366 * 86400:
        raise CallerError("the wall time limit must be more than 0 and at most a year, in seconds")
    return limits


class BudgetService:
    def __init__(
        self,
        store: BudgetStore,
        *,
        tenants: TenantStore,
        keys: KeyStore,
        agents: AgentStore,
        directory: BudgetDirectory | None = None,
    ) -> None:
        self._store = store
        self._tenants = tenants
        self._keys = keys
        self._agents = agents
        self._directory = directory

    async def set(
        self,
        tenant_name: str,
        *,
        period: Period,
        limits: Limits,
        key: str | None = None,
        agent: str | None = None,
        actor: str,
    ) -> BudgetRule:
        tenant = await self._tenant(tenant_name)
        scope, label = await self._scope(tenant, key, agent)
        rule = BudgetRule(tenant.id, scope, period, check_limits(period, limits), label)
        stored = await self._store.put_rule(rule, actor=actor)
        self._changed(stored)
        return stored

    async def clear(
        self,
        tenant_name: str,
        *,
        period: Period,
        key: str | None = None,
        agent: str | None = None,
        actor: str,
    ) -> BudgetRule:
        tenant = await self._tenant(tenant_name)
        scope, label = await self._scope(tenant, key, agent)
        current = [r for r in await self._store.list_rules(tenant.id) if r.scope == scope]
        rule = next((r for r in current if r.period is period), None)
        if rule is None or not await self._store.delete_rule(rule, actor=actor):
            raise NotFound(f"no {period.value} budget is set for {scope.kind.value} {label!r}")
        self._changed(rule)
        return rule

    async def show(self, tenant_name: str | None, day: date | None = None) -> list[BudgetStatus]:
        """The rules (of one tenant, or all), with each daily rule's counters on `day` (UTC;
        default today)."""
        tenant_id = (await self._tenant(tenant_name)).id if tenant_name else None
        rules = await self._store.list_rules(tenant_id)
        day = day or datetime.now(UTC).date()
        daily = [r.scope.key for r in rules if r.period is Period.DAY]
        usage = await self._store.usage(daily, day) if daily else {}
        return [
            BudgetStatus(
                r,
                (usage.get(r.scope.key) or DailyUsage(r.scope.key, day))
                if r.period is Period.DAY
                else None,
            )
            for r in rules
        ]

    def _changed(self, rule: BudgetRule) -> None:
        if self._directory is not None:
            self._directory.invalidate(rule.tenant_id)

    async def _tenant(self, name: str) -> Tenant:
        tenant = await self._tenants.get_tenant(name)
        if tenant is None:
            raise NotFound(f"tenant {name!r} not found")
        return tenant

    async def _scope(self, tenant: Tenant, key: str | None, agent: str | None) -> tuple[Scope, str]:
        if key is not None and agent is not None:
            raise CallerError("a budget applies to a key or to an agent, not both")
        if agent is not None:
            found = await self._agents.get_agent(tenant.id, agent)
            if found is None:
                raise NotFound(f"agent {agent!r} not found in tenant {tenant.name!r}")
            return Scope(ScopeKind.AGENT, found.id), found.name
        if key is not None:
            return await self._key_scope(tenant, key)
        return Scope(ScopeKind.TENANT, tenant.id), tenant.name

    async def _key_scope(self, tenant: Tenant, key: str) -> tuple[Scope, str]:
        """A key of the tenant by its id, or by its name when exactly one live key has it."""
        keys = await self._keys.list_keys(tenant.id)
        try:
            wanted = uuid.UUID(key)
        except ValueError:
            named = [k for k in keys if k.name == key and k.revoked_at is None]
            if len(named) > 1:
                raise CallerError(
                    f"{len(named)} keys of tenant {tenant.name!r} are named {key!r}: give its id"
                ) from None
            if named:
                return Scope(ScopeKind.KEY, named[0].id), named[0].name
        else:
            by_id = next((k for k in keys if k.id == wanted), None)
            if by_id is not None:
                return Scope(ScopeKind.KEY, by_id.id), by_id.name
        raise NotFound(f"API key {key!r} not found in tenant {tenant.name!r}")
