"""Which budgets apply to a run: configured rules, cached per tenant, resolved at drive start.

The run loop asks once per drive (not per step). Rules are read per tenant and kept for
`budget_cache_ttl_s`, so a tenant without budgets costs no query at all while its entry is
fresh, and a change made elsewhere (`garrison budgets set` in another process) is seen within
the TTL. Daily limits themselves are re-read by the database on every reservation, so a lowered
daily limit binds at once; per-run limits bind from the run's next drive.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence

from agent.budgets.gate import UNLIMITED, RunBudget, is_tool_call, tightest
from agent.budgets.model import BudgetRule, Period, ScopeKind
from agent.budgets.ports import BudgetStore
from agent.domain import AgentDefinition, Run, Step
from agent.settings import AgentSettings


class BudgetDirectory:
    """Builds each run's `RunBudget`; one per process, shared by every run it drives."""

    def __init__(
        self,
        store: BudgetStore,
        settings: AgentSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._cache: dict[uuid.UUID, tuple[float, list[BudgetRule]]] = {}
        self._loading: dict[uuid.UUID, asyncio.Future[list[BudgetRule]]] = {}

    def invalidate(self, tenant_id: uuid.UUID | None = None) -> None:
        """Forget cached rules (of one tenant, or all) after a change made in this process."""
        if tenant_id is None:
            self._cache.clear()
        else:
            self._cache.pop(tenant_id, None)

    async def for_run(self, run: Run, agent: AgentDefinition, history: Sequence[Step]) -> RunBudget:
        rules = await self._rules(run.tenant_id)
        if not rules:
            return UNLIMITED
        key_id = None
        if any(r.scope.kind is ScopeKind.KEY for r in rules):
            key_id = await self._store.run_api_key(run.id)
        subjects = {
            ScopeKind.TENANT: run.tenant_id,
            ScopeKind.AGENT: agent.id,
            ScopeKind.KEY: key_id,
        }
        applicable = [r for r in rules if subjects[r.scope.kind] == r.scope.subject_id]
        per_run = tightest([r for r in applicable if r.period is Period.RUN])
        daily = [r for r in applicable if r.period is Period.DAY and not r.limits.empty]
        if not per_run and not daily:
            return UNLIMITED
        tool_calls = sum(1 for s in history if is_tool_call(s))
        return RunBudget(
            run=run,
            per_run=per_run,
            daily=daily,
            store=self._store,
            decision_max_tokens=self._settings.decision_max_tokens,
            bytes_per_token=self._settings.budget_prompt_bytes_per_token,
            reservation_ttl_s=self._settings.budget_reservation_ttl_s,
            contention_wait_s=self._settings.budget_contention_wait_s,
            tool_calls=tool_calls,
            paused_s=awaiting_people_s(history),
        )

    async def _rules(self, tenant_id: uuid.UUID) -> list[BudgetRule]:
        cached = self._cache.get(tenant_id)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        # Many runs of one tenant starting together share one read instead of each making one.
        loading = self._loading.get(tenant_id)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[list[BudgetRule]] = asyncio.get_running_loop().create_future()
        self._loading[tenant_id] = future
        try:
            rules = await self._store.list_rules(tenant_id)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved here, so a future nobody awaited stays quiet
            raise
        finally:
            self._loading.pop(tenant_id, None)
        self._cache[tenant_id] = (self._clock() + self._settings.budget_cache_ttl_s, rules)
        future.set_result(rules)
        return rules


def awaiting_people_s(history: Sequence[Step]) -> float:
    """Seconds the run spent waiting for a person: from each step that asked for an approval to
    the step that carried out the decision. Not the run's own time, so a per-run wall-time budget
    does not count it (an approval given the next morning must not end the run at once)."""
    by_number = {s.number: s for s in history}
    waited = 0.0
    for step in history:
        gated = by_number.get(step.context.get("approval_of_step", -1))
        if gated is not None:
            waited += max(0.0, (step.started_at - gated.finished_at).total_seconds())
    return waited
