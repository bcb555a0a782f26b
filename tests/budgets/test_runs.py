"""Budgets and loop detection in real runs: worker, run loop, Postgres, scripted model over HTTP."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from agent import codes
from agent.budgets.model import Limits, Period, Reservation
from agent.domain import Role, Run, RunStatus, StepStatus
from agent.runtime import Services
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture


def search(query: str) -> dict[str, object]:
    return {"tool": "search_documents", "arguments": {"query": query}}


def finish(answer: str) -> dict[str, object]:
    return {"tool": "finish", "arguments": {"answer": answer}}


async def run_once(services: Services, fx: TenantFixture, task: str = "question?") -> Run:
    run = await services.runs.submit(fx.principal, "assistant", task)
    assert await services.worker().run_until_idle() == 1
    return await services.runs.get(run.id, fx.tenant.id)


async def budget(
    services: Services, fx: TenantFixture, period: Period, key: bool = False, **limits: Any
) -> None:
    await services.budgets.set(
        fx.tenant.name,
        period=period,
        limits=Limits(**limits),
        key=str(fx.principal.key_id) if key else None,
        actor="test",
    )


def assert_exhausted(run: Run, *fragments: str) -> None:
    assert run.status == RunStatus.BUDGET_EXHAUSTED, (run.status, run.failure_detail)
    assert run.failure_code == codes.BUDGET_EXHAUSTED
    assert run.failure_detail is not None
    assert run.output == run.failure_detail  # the rule-based final message
    for fragment in fragments:
        assert fragment in run.failure_detail, run.failure_detail


async def test_a_daily_token_budget_is_charged_real_usage_and_then_refuses(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    # A decision reserves 384 tokens plus its prompt estimate (more than 16): after 9,100 used,
    # no call fits in 9,500.
    await budget(services, acme, Period.DAY, key=True, tokens=9_500)
    scripted_model.enqueue(finish("first"), prompt_tokens=9_000, completion_tokens=100)
    first = await run_once(services, acme)
    assert first.status == RunStatus.SUCCEEDED

    scripted_model.enqueue(finish("never asked"))
    second = await run_once(services, acme)
    assert_exhausted(
        second,
        "Stopped: the daily budget of key 'test key' for tokens is exhausted",
        "limit 9500 tokens, used 9100 tokens",
        "the next model call needs up to",
    )
    assert second.step_count == 0  # refused before the model was asked: no step
    assert scripted_model.pending == 1
    [status] = await services.budgets.show("acme")
    assert status.usage is not None
    assert (status.usage.tokens_used, status.usage.tokens_reserved) == (9_100, 0)
    assert status.usage.steps_used == 1


async def test_a_key_budget_does_not_bind_the_tenants_other_keys(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await budget(services, acme, Period.DAY, key=True, tokens=1)
    _key, secret = await services.keys.create("acme", "other", [Role.CLIENT], actor="test")
    other = await services.keys.authenticate(secret)
    scripted_model.enqueue(finish("fine"))
    run = await services.runs.submit(other, "assistant", "q")
    assert await services.worker().run_until_idle() == 1
    assert (await services.runs.get(run.id, acme.tenant.id)).status == RunStatus.SUCCEEDED
    assert_exhausted(await run_once(services, acme), "daily budget of key 'test key'")


async def test_a_daily_step_budget_counts_steps_across_runs(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await budget(services, acme, Period.DAY, steps=3)
    scripted_model.enqueue(search("a"))
    scripted_model.enqueue(finish("one"))
    assert (await run_once(services, acme)).status == RunStatus.SUCCEEDED
    scripted_model.enqueue(search("b"))
    scripted_model.enqueue(finish("never"))
    second = await run_once(services, acme)
    assert_exhausted(
        second, "daily budget of tenant 'acme' for steps", "limit 3 steps, used 3 steps"
    )
    assert second.step_count == 1


async def test_a_per_run_token_budget_stops_before_a_call_that_might_not_fit(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    # A decision reserves 384 tokens plus its prompt estimate: after 1,520 used, the second
    # call might not fit in 2,000.
    await budget(services, acme, Period.RUN, tokens=2_000)
    scripted_model.enqueue(search("a"), prompt_tokens=1_500, completion_tokens=20)
    scripted_model.enqueue(finish("never"))
    run = await run_once(services, acme)
    assert_exhausted(run, "per-run budget of tenant 'acme' for tokens", "limit 2000 tokens")
    assert run.step_count == 1
    assert scripted_model.pending == 1


async def test_a_per_run_step_budget_ends_the_run_at_the_step_boundary(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await budget(services, acme, Period.RUN, steps=2)
    for query in ("a", "b", "c"):
        scripted_model.enqueue(search(query))
    run = await run_once(services, acme)
    assert_exhausted(run, "per-run budget of tenant 'acme' for steps", "limit 2 steps, used 2")
    assert run.step_count == 2
    assert scripted_model.pending == 1


async def test_a_tool_call_budget_refuses_the_call_but_not_the_answer(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await services.budgets.set(
        "acme", period=Period.RUN, limits=Limits(tool_calls=1), agent="assistant", actor="test"
    )
    scripted_model.enqueue(search("a"))
    scripted_model.enqueue(finish("answered after one search"))
    assert (await run_once(services, acme)).status == RunStatus.SUCCEEDED

    scripted_model.enqueue(search("a"))
    scripted_model.enqueue(search("b"))
    run = await run_once(services, acme)
    assert_exhausted(run, "per-run budget of agent 'assistant' for tool calls", "limit 1 tool")
    steps = await services.runs.steps(run.id, acme.tenant.id)
    assert [s.status for s in steps] == [StepStatus.COMPLETED, StepStatus.FAILED]
    refused = steps[1]
    assert refused.error_code == codes.BUDGET_EXHAUSTED
    assert refused.tool == "search_documents"  # the action it refused is on record
    assert refused.arguments is not None
    assert refused.arguments["query"] == "b"
    assert len(refused.decision["attempts"]) == 1


async def test_a_daily_tool_call_budget_of_zero_allows_answers_only(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await budget(services, acme, Period.DAY, tool_calls=0)
    scripted_model.enqueue(finish("fine"))
    assert (await run_once(services, acme)).status == RunStatus.SUCCEEDED
    scripted_model.enqueue(search("a"))
    assert_exhausted(await run_once(services, acme), "daily budget of tenant 'acme'")


async def test_the_wall_time_budget_cuts_a_model_call_at_the_deadline(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await budget(services, acme, Period.RUN, wall_s=1.0)
    scripted_model.enqueue(finish("too late"), delay_s=4.0)
    started = time.monotonic()
    run = await run_once(services, acme)
    assert time.monotonic() - started < 3.5
    assert_exhausted(run, "per-run budget of tenant 'acme' for wall time", "limit 1 s")
    assert run.step_count == 0
    assert len(scripted_model.chat_requests) == 1  # it was asked, and cut off


async def test_a_reservation_left_by_a_dead_worker_is_reclaimed_when_it_is_in_the_way(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await budget(services, acme, Period.DAY, key=True, tokens=5_000)
    scope = f"key:{acme.principal.key_id}"
    dead = Reservation(
        id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        scopes=(scope,),
        day=(await services.budgets.show("acme"))[0].usage.day,  # type: ignore[union-attr]
        tokens=4_900,
        ttl_s=0.01,
    )
    assert await services.store.budgets.reserve(dead) == []
    time.sleep(0.05)
    scripted_model.enqueue(finish("fits once the dead hold is gone"))
    assert (await run_once(services, acme)).status == RunStatus.SUCCEEDED
    [status] = await services.budgets.show("acme")
    assert status.usage is not None
    assert status.usage.tokens_reserved == 0


async def test_without_budgets_the_loop_makes_no_budget_query(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = services.store.budgets
    calls: list[str] = []
    for name in ("list_rules", "run_api_key", "reserve", "settle", "reclaim_expired"):
        real = getattr(store, name)

        async def counted(*args: Any, _name: str = name, _real: Any = real) -> Any:
            calls.append(_name)
            return await _real(*args)

        monkeypatch.setattr(store, name, counted)
    for n in range(3):
        scripted_model.enqueue(search(f"q{n}"))
        scripted_model.enqueue(finish("ok"))
        assert (await run_once(services, acme)).status == RunStatus.SUCCEEDED
    assert calls == ["list_rules"]  # once per tenant per cache TTL, never per step


async def test_a_repeated_search_is_stopped_as_a_loop(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await services.documents.ingest(
        acme.tenant.id, title="Leave", text="Everyone gets 25 days of annual leave."
    )
    for query in ("annual leave", "Annual leave", "annual  leave", "annual leave"):
        scripted_model.enqueue(search(query))
    run = await run_once(services, acme, "How much annual leave?")
    assert run.status == RunStatus.FAILED
    assert run.failure_code == codes.LOOP_DETECTED
    assert run.failure_detail is not None
    assert "same result 3 times (steps 1, 2, 3)" in run.failure_detail
    assert 'search_documents {"k":4,"query":"annual  leave"' in run.failure_detail
    assert run.step_count == 3
    assert scripted_model.pending == 1
    report = await services.replays.replay(run.id, acme.tenant.id)
    assert report.match, report.divergence


async def test_searches_that_bring_nothing_new_are_stopped(
    services: Services, scripted_model: ScriptedModelServer
) -> None:
    from tests.conftest import make_tenant

    fx = await make_tenant(services, "stale", max_steps=10)
    await services.documents.ingest(fx.tenant.id, title="Leave", text="25 days of annual leave.")
    for n in range(6):
        scripted_model.enqueue(search(f"leave question {n}"))
    run = await run_once(services, fx, "annual leave")
    assert run.failure_code == codes.LOOP_DETECTED
    assert run.failure_detail is not None
    assert "the last 4 tool calls brought no new information (steps 1, 2, 3, 4)" in (
        run.failure_detail
    )
