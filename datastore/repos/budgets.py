"""Budget rules, daily counters and reservations (implements `agent.budgets.ports.BudgetStore`).

A reservation is one statement: a guarded upsert of each scope's counters for the day, whose
`ON CONFLICT DO UPDATE ... WHERE` compares against the latest committed row under its row lock
(`used + reserved + wanted <= limit`), plus the reservation rows for the scopes that took it.
Concurrent reservations therefore serialise on the counters and never pass a limit together.
A reservation over several scopes is all-or-nothing: when one scope refuses, what the others
took is given back at once (a brief over-reservation can only refuse someone else, never let
anything overspend).

Deadlocks are avoided by one lock order everywhere: counter rows first, sorted by scope and day,
then reservation rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agent.budgets.model import (
    BudgetRule,
    DailyUsage,
    Limits,
    Period,
    Refusal,
    Reservation,
    Scope,
)
from datastore.errors import translated
from datastore.repos.audit import append_entry

RESERVE_SQL = text("""
WITH want AS (
    SELECT scope, max_tokens, max_steps, max_tool_calls
    FROM budgets
    WHERE scope = ANY(CAST(:scopes AS text[])) AND period = 'day'
),
taken AS (
    INSERT INTO budget_usage AS u (scope, day, tokens_reserved, steps_used, tool_calls_used,
                                   token_limit, step_limit, tool_call_limit)
    SELECT scope, :day, :tokens, :steps, :tool_calls, max_tokens, max_steps, max_tool_calls
    FROM want
    WHERE (max_tokens IS NULL OR :tokens <= max_tokens)
      AND (max_steps IS NULL OR :steps <= max_steps)
      AND (max_tool_calls IS NULL OR :tool_calls <= max_tool_calls)
    ORDER BY scope
    ON CONFLICT (scope, day) DO UPDATE SET
        tokens_reserved = u.tokens_reserved + excluded.tokens_reserved,
        steps_used = u.steps_used + excluded.steps_used,
        tool_calls_used = u.tool_calls_used + excluded.tool_calls_used,
        token_limit = excluded.token_limit,
        step_limit = excluded.step_limit,
        tool_call_limit = excluded.tool_call_limit,
        updated_at = now()
    WHERE (excluded.token_limit IS NULL
           OR u.tokens_used + u.tokens_reserved + excluded.tokens_reserved <= excluded.token_limit)
      AND (excluded.step_limit IS NULL
           OR u.steps_used + excluded.steps_used <= excluded.step_limit)
      AND (excluded.tool_call_limit IS NULL
           OR u.tool_calls_used + excluded.tool_calls_used <= excluded.tool_call_limit)
    RETURNING u.scope
),
held AS (
    INSERT INTO budget_reservations (id, scope, day, tokens, run_id, expires_at)
    SELECT :id, scope, :day, :tokens, :run_id, now() + make_interval(secs => :ttl)
    FROM taken
    WHERE :tokens > 0
)
SELECT w.scope, w.max_tokens, w.max_steps, w.max_tool_calls, t.scope IS NOT NULL AS taken,
       coalesce(c.tokens_used, 0) AS tokens_used,
       coalesce(c.tokens_reserved, 0) AS tokens_reserved,
       coalesce(c.steps_used, 0) AS steps_used,
       coalesce(c.tool_calls_used, 0) AS tool_calls_used
FROM want w
LEFT JOIN taken t ON t.scope = w.scope
LEFT JOIN budget_usage c ON c.scope = w.scope AND c.day = :day
""")

LOCK_SQL = text("""
SELECT 1 FROM budget_usage
WHERE scope = ANY(CAST(:scopes AS text[])) AND day = :day
ORDER BY scope
FOR UPDATE
""")

# Settles a reservation (`used` tokens charged, its hold released) or gives back what a
# reservation took (`used` 0, its steps and tool calls subtracted). A hold already reclaimed
# (expired) is not released twice: only the rows this DELETE removed are subtracted.
SETTLE_SQL = text("""
WITH gone AS (
    DELETE FROM budget_reservations WHERE id = :id RETURNING scope, tokens
)
UPDATE budget_usage u SET
    tokens_reserved = u.tokens_reserved - coalesce(g.tokens, 0),
    tokens_used = u.tokens_used + :used,
    steps_used = u.steps_used - :steps,
    tool_calls_used = u.tool_calls_used - :tool_calls,
    updated_at = now()
FROM unnest(CAST(:scopes AS text[])) AS s(scope)
LEFT JOIN gone g ON g.scope = s.scope
WHERE u.scope = s.scope AND u.day = :day
""")

EXPIRED_SQL = text("""
SELECT u.scope, u.day
FROM budget_usage u
WHERE (u.scope, u.day) IN (
    SELECT r.scope, r.day FROM budget_reservations r
    WHERE r.scope = ANY(CAST(:scopes AS text[])) AND r.expires_at < now()
)
ORDER BY u.scope, u.day
FOR UPDATE
""")

RECLAIM_SQL = text("""
WITH gone AS (
    DELETE FROM budget_reservations r
    USING unnest(CAST(:scopes AS text[]), CAST(:days AS date[])) AS k(scope, day)
    WHERE r.scope = k.scope AND r.day = k.day AND r.expires_at < now()
    RETURNING r.scope, r.day, r.tokens
),
freed AS (
    SELECT scope, day, sum(tokens) AS tokens, count(*) AS n FROM gone GROUP BY scope, day
)
UPDATE budget_usage u SET tokens_reserved = u.tokens_reserved - f.tokens, updated_at = now()
FROM freed f
WHERE u.scope = f.scope AND u.day = f.day
RETURNING f.n
""")

# Each rule with its scope's name; the subject's id is split out of the scope so each join is a
# primary-key lookup.
RULES_SQL = """
SELECT b.*, coalesce(t.name, k.name, a.name, '') AS label
FROM budgets b
LEFT JOIN tenants t
    ON split_part(b.scope, ':', 1) = 'tenant' AND t.id = CAST(split_part(b.scope, ':', 2) AS uuid)
LEFT JOIN api_keys k
    ON split_part(b.scope, ':', 1) = 'key' AND k.id = CAST(split_part(b.scope, ':', 2) AS uuid)
LEFT JOIN agents a
    ON split_part(b.scope, ':', 1) = 'agent' AND a.id = CAST(split_part(b.scope, ':', 2) AS uuid)
{where}
ORDER BY b.tenant_id, split_part(b.scope, ':', 1) DESC, label, b.period DESC
"""

PUT_SQL = text("""
INSERT INTO budgets (scope, period, tenant_id, max_tokens, max_steps, max_tool_calls, max_wall_s)
VALUES (:scope, :period, :tenant_id, :max_tokens, :max_steps, :max_tool_calls, :max_wall_s)
ON CONFLICT (scope, period) DO UPDATE SET
    max_tokens = excluded.max_tokens,
    max_steps = excluded.max_steps,
    max_tool_calls = excluded.max_tool_calls,
    max_wall_s = excluded.max_wall_s,
    updated_at = now()
RETURNING *
""")


def _limits(row: Any) -> Limits:
    return Limits(
        tokens=row.max_tokens,
        steps=row.max_steps,
        tool_calls=row.max_tool_calls,
        wall_s=row.max_wall_s,
    )


def _rule(row: Any, label: str) -> BudgetRule:
    return BudgetRule(
        tenant_id=row.tenant_id,
        scope=Scope.parse(row.scope),
        period=Period(row.period),
        limits=_limits(row),
        label=label,
        updated_at=row.updated_at,
    )


async def _audit(conn: AsyncConnection, rule: BudgetRule, action: str, actor: str) -> None:
    limits = rule.limits
    await append_entry(
        conn,
        tenant_id=rule.tenant_id,
        actor=actor,
        action=action,
        object_type="budget",
        object_id=f"{rule.scope.key}/{rule.period.value}",
        detail={
            "scope": rule.scope.kind.value,
            "subject": rule.label,
            "period": rule.period.value,
            "limits": {
                "tokens": limits.tokens,
                "steps": limits.steps,
                "tool_calls": limits.tool_calls,
                "wall_s": limits.wall_s,
            },
        },
    )


class BudgetRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def list_rules(self, tenant_id: uuid.UUID | None) -> list[BudgetRule]:
        where = "" if tenant_id is None else "WHERE b.tenant_id = :tenant_id"
        async with translated(), self._engine.connect() as conn:
            rows = await conn.execute(text(RULES_SQL.format(where=where)), {"tenant_id": tenant_id})
            return [_rule(r, r.label) for r in rows]

    async def put_rule(self, rule: BudgetRule, *, actor: str) -> BudgetRule:
        values = {
            "scope": rule.scope.key,
            "period": rule.period.value,
            "tenant_id": rule.tenant_id,
            "max_tokens": rule.limits.tokens,
            "max_steps": rule.limits.steps,
            "max_tool_calls": rule.limits.tool_calls,
            "max_wall_s": rule.limits.wall_s,
        }
        async with translated(), self._engine.begin() as conn:
            row = (await conn.execute(PUT_SQL, values)).one()
            stored = _rule(row, rule.label)
            await _audit(conn, stored, "budget.set", actor)
        return stored

    async def delete_rule(self, rule: BudgetRule, *, actor: str) -> bool:
        stmt = text("DELETE FROM budgets WHERE scope = :scope AND period = :period RETURNING 1")
        params = {"scope": rule.scope.key, "period": rule.period.value}
        async with translated(), self._engine.begin() as conn:
            if (await conn.execute(stmt, params)).first() is None:
                return False
            await _audit(conn, rule, "budget.clear", actor)
        return True

    async def run_api_key(self, run_id: uuid.UUID) -> uuid.UUID | None:
        stmt = text("SELECT api_key_id FROM runs WHERE id = :id")
        async with translated(), self._engine.connect() as conn:
            found: uuid.UUID | None = (await conn.execute(stmt, {"id": run_id})).scalar()
            return found

    async def reserve(self, reservation: Reservation) -> list[Refusal]:
        params = {
            "scopes": list(reservation.scopes),
            "day": reservation.day,
            "tokens": reservation.tokens,
            "steps": reservation.steps,
            "tool_calls": reservation.tool_calls,
            "id": reservation.id,
            "run_id": reservation.run_id,
            "ttl": float(reservation.ttl_s),
        }
        async with translated(), self._engine.begin() as conn:
            rows = (await conn.execute(RESERVE_SQL, params)).all()
        refused = [
            Refusal(
                r.scope,
                Limits(tokens=r.max_tokens, steps=r.max_steps, tool_calls=r.max_tool_calls),
                DailyUsage(
                    r.scope,
                    reservation.day,
                    r.tokens_used,
                    r.tokens_reserved,
                    r.steps_used,
                    r.tool_calls_used,
                ),
            )
            for r in rows
            if not r.taken
        ]
        taken = sorted(r.scope for r in rows if r.taken)
        if refused and taken:
            await self._settle(
                reservation,
                taken,
                used=0,
                steps=reservation.steps,
                tool_calls=reservation.tool_calls,
            )
        return refused

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        await self._settle(reservation, list(reservation.scopes), used=used_tokens)

    async def _settle(
        self,
        reservation: Reservation,
        scopes: Sequence[str],
        *,
        used: int,
        steps: int = 0,
        tool_calls: int = 0,
    ) -> None:
        ordered = sorted(scopes)
        params = {
            "id": reservation.id,
            "scopes": ordered,
            "day": reservation.day,
            "used": used,
            "steps": steps,
            "tool_calls": tool_calls,
        }
        async with translated(), self._engine.begin() as conn:
            await self._lock(conn, ordered, reservation.day)
            await conn.execute(SETTLE_SQL, params)

    async def reclaim_expired(self, scopes: Sequence[str]) -> int:
        async with translated(), self._engine.begin() as conn:
            keys = (await conn.execute(EXPIRED_SQL, {"scopes": list(scopes)})).all()
            if not keys:
                return 0
            params = {"scopes": [k.scope for k in keys], "days": [k.day for k in keys]}
            freed = (await conn.execute(RECLAIM_SQL, params)).scalars().all()
        return int(sum(freed))

    async def usage(self, scopes: Sequence[str], day: date) -> dict[str, DailyUsage]:
        stmt = text(
            "SELECT * FROM budget_usage WHERE scope = ANY(CAST(:scopes AS text[])) AND day = :day"
        )
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt, {"scopes": list(scopes), "day": day})).all()
        return {
            r.scope: DailyUsage(
                r.scope, r.day, r.tokens_used, r.tokens_reserved, r.steps_used, r.tool_calls_used
            )
            for r in rows
        }

    @staticmethod
    async def _lock(conn: AsyncConnection, scopes: Sequence[str], day: date) -> None:
        """Lock the counter rows in scope order before touching reservations (the lock order)."""
        await conn.execute(LOCK_SQL, {"scopes": list(scopes), "day": day})
