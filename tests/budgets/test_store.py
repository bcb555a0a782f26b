"""The budget store on real Postgres: the guarded reservation, all-or-nothing over scopes,
settlement, and reclaiming reservations whose worker died."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime

from sqlalchemy import text

from agent.budgets.model import Limits, Period, Reservation
from agent.runtime import Services
from tests.conftest import TenantFixture

DAY = date(2026, 3, 1)


def reservation(scopes: list[str], tokens: int = 0, **kw: int | float) -> Reservation:
    return Reservation(
        id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        scopes=tuple(sorted(scopes)),
        day=DAY,
        tokens=tokens,
        **kw,  # type: ignore[arg-type]
    )


async def daily(services: Services, fx: TenantFixture, **limits: int) -> str:
    rule = await services.budgets.set(
        fx.tenant.name, period=Period.DAY, limits=Limits(**limits), actor="test"
    )
    return rule.scope.key


async def key_daily(services: Services, fx: TenantFixture, **limits: int) -> str:
    rule = await services.budgets.set(
        fx.tenant.name,
        period=Period.DAY,
        limits=Limits(**limits),
        key=str(fx.principal.key_id),
        actor="test",
    )
    return rule.scope.key


async def test_a_reservation_is_taken_while_it_fits_and_refused_after(
    services: Services, acme: TenantFixture
) -> None:
    store = services.store.budgets
    scope = await daily(services, acme, tokens=1000)
    assert await store.reserve(reservation([scope], 600)) == []
    [refusal] = await store.reserve(reservation([scope], 500))
    assert refusal.scope == scope
    assert refusal.limits.tokens == 1000
    assert (refusal.usage.tokens_used, refusal.usage.tokens_reserved) == (0, 600)
    assert await store.reserve(reservation([scope], 400)) == []  # exactly at the limit
    usage = (await store.usage([scope], DAY))[scope]
    assert (usage.tokens_used, usage.tokens_reserved) == (0, 1000)


async def test_a_first_reservation_larger_than_the_limit_is_refused(
    services: Services, acme: TenantFixture
) -> None:
    store = services.store.budgets
    scope = await daily(services, acme, tokens=100)
    [refusal] = await store.reserve(reservation([scope], 101))
    assert refusal.scope == scope
    assert await store.usage([scope], DAY) == {}


async def test_settling_charges_the_real_use_and_frees_the_rest(
    services: Services, acme: TenantFixture
) -> None:
    store = services.store.budgets
    scope = await daily(services, acme, tokens=1000)
    held = reservation([scope], 600)
    assert await store.reserve(held) == []
    await store.settle(held, 150)
    usage = (await store.usage([scope], DAY))[scope]
    assert (usage.tokens_used, usage.tokens_reserved) == (150, 0)
    assert await store.reserve(reservation([scope], 850)) == []
    assert await store.reserve(reservation([scope], 1)) != []


async def test_steps_and_tool_calls_count_at_once_against_their_limits(
    services: Services, acme: TenantFixture
) -> None:
    store = services.store.budgets
    scope = await daily(services, acme, steps=2, tool_calls=1)
    assert await store.reserve(reservation([scope], 10, steps=1)) == []
    assert await store.reserve(reservation([scope], 10, steps=0)) == []  # a retry: no new step
    assert await store.reserve(reservation([scope], 10, steps=1)) == []
    assert await store.reserve(reservation([scope], 10, steps=1)) != []
    assert await store.reserve(reservation([scope], tool_calls=1)) == []
    [refusal] = await store.reserve(reservation([scope], tool_calls=1))
    assert (refusal.usage.steps_used, refusal.usage.tool_calls_used) == (2, 1)


async def test_a_reservation_over_several_scopes_is_all_or_nothing(
    services: Services, acme: TenantFixture
) -> None:
    store = services.store.budgets
    roomy = await daily(services, acme, tokens=10_000, steps=100)
    tight = await key_daily(services, acme, tokens=100)
    [refusal] = await store.reserve(reservation([roomy, tight], 500, steps=1))
    assert refusal.scope == tight
    # What the roomy scope accepted was given back in full.
    usage = (await store.usage([roomy], DAY))[roomy]
    assert (usage.tokens_reserved, usage.steps_used) == (0, 0)
    async with services.store.engine.connect() as conn:
        held = (await conn.execute(text("SELECT count(*) FROM budget_reservations"))).scalar()
    assert held == 0


async def test_scopes_without_a_daily_budget_are_ignored(
    services: Services, acme: TenantFixture
) -> None:
    store = services.store.budgets
    scope = await daily(services, acme, tokens=100)
    other = f"key:{uuid.uuid4()}"
    assert await store.reserve(reservation([scope, other], 50)) == []
    assert set(await store.usage([scope, other], DAY)) == {scope}


async def test_expired_reservations_are_reclaimed_and_a_late_settlement_still_charges(
    services: Services, acme: TenantFixture
) -> None:
    store = services.store.budgets
    scope = await daily(services, acme, tokens=1000)
    dead = reservation([scope], 900, ttl_s=0.05)  # its worker "dies" and never settles
    assert await store.reserve(dead) == []
    assert await store.reserve(reservation([scope], 200)) != []
    assert await store.reclaim_expired([scope]) == 0  # not expired yet
    await asyncio.sleep(0.1)
    assert await store.reclaim_expired([scope]) == 1
    assert (await store.usage([scope], DAY))[scope].tokens_reserved == 0
    # The worker was only slow: its settlement charges what it used and releases nothing twice.
    await store.settle(dead, 300)
    usage = (await store.usage([scope], DAY))[scope]
    assert (usage.tokens_used, usage.tokens_reserved) == (300, 0)


async def test_a_lowered_limit_binds_the_next_reservation(
    services: Services, acme: TenantFixture
) -> None:
    store = services.store.budgets
    scope = await daily(services, acme, tokens=1000)
    assert await store.reserve(reservation([scope], 400)) == []
    await daily(services, acme, tokens=500)
    [refusal] = await store.reserve(reservation([scope], 200))
    assert refusal.limits.tokens == 500


async def test_concurrent_reservations_never_pass_the_limit(
    services: Services, acme: TenantFixture
) -> None:
    store = services.store.budgets
    roomy = await daily(services, acme, tokens=10**9)
    scope = await key_daily(services, acme, tokens=1000)
    wanted = [reservation([roomy, scope], 70) for _ in range(40)]
    results = await asyncio.gather(*(store.reserve(r) for r in wanted))
    taken = sum(1 for refused in results if not refused)
    assert taken == 1000 // 70
    usage = await store.usage([roomy, scope], DAY)
    assert usage[scope].tokens_reserved == taken * 70
    assert usage[roomy].tokens_reserved == taken * 70  # refused ones gave back what they took


async def test_rules_are_listed_with_their_names_and_audited(
    services: Services, acme: TenantFixture, globex: TenantFixture
) -> None:
    await daily(services, acme, tokens=5)
    await key_daily(services, acme, steps=3)
    await services.budgets.set(
        "acme", period=Period.RUN, limits=Limits(wall_s=2.5), agent="assistant", actor="test"
    )
    await daily(services, globex, tool_calls=0)
    rules = await services.store.budgets.list_rules(acme.tenant.id)
    assert [(r.scope.kind.value, r.label, r.period.value) for r in rules] == [
        ("tenant", "acme", "day"),
        ("key", "test key", "day"),
        ("agent", "assistant", "run"),
    ]
    assert rules[2].limits.wall_s == 2.5
    assert len(await services.store.budgets.list_rules(None)) == 4
    entries = await services.store.audit.list_entries(acme.tenant.id, 50)
    assert [e.action for e in entries].count("budget.set") == 3
    before = datetime.now(UTC)
    cleared = await services.budgets.clear("acme", period=Period.DAY, actor="test")
    assert cleared.limits.tokens == 5
    assert len(await services.store.budgets.list_rules(acme.tenant.id)) == 2
    latest = (await services.store.audit.list_entries(acme.tenant.id, 1))[0]
    assert latest.action == "budget.clear"
    assert latest.created_at is not None
    assert latest.created_at >= before
