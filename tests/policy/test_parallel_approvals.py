"""Parallel pending approvals in one run: a decision of several calls parks several actions at
once, each approved or denied on its own; the run waits for the last decision, then carries
them all out in one turn, each approved action exactly once, also across a crash."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.budgets.model import Limits, Period
from agent.domain import ApprovalStatus, Run, RunStatus, StepStatus
from agent.runtime import Services
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture
from tests.outbox.conftest import EFFECT_TOOLS, HttpSink, SmtpSink, finish, http_request, send_email
from tests.policy.conftest import apply, deliver, drive

EVERY_EMAIL = """
[approvals]
ttl_s = {ttl}

[[rules]]
name = "every-email"
tools = ["send_email"]
effect = "require_approval"
"""


def calls(*actions: dict[str, object]) -> dict[str, object]:
    return {"calls": list(actions)}


async def start(services: Services, fx: TenantFixture, task: str = "notify") -> Run:
    """A run of an agent allowed three calls per decision, driven until it ends or waits."""
    await services.tenancy.put_agent(
        fx.tenant.name,
        "dispatcher",
        instructions="Notify people and systems when asked.",
        tools=EFFECT_TOOLS,
        retrieval_k=0,
        parallel_calls=3,
        actor="test",
    )
    run = await services.runs.submit(fx.principal, "dispatcher", task)
    await services.worker().run_until_idle()
    return await services.runs.get(run.id, fx.tenant.id)


async def pending(services: Services, run: Run) -> dict[int, Any]:
    """The run's pending approvals by step number."""
    approvals = await services.approvals.list(run.tenant_id, run_id=run.id)
    return {a.step_number: a for a in approvals if a.status is ApprovalStatus.PENDING}


async def test_two_actions_of_one_decision_wait_side_by_side_and_run_once_decided(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    smtp_sink: SmtpSink,
    http_sink: HttpSink,
) -> None:
    await apply(services, "acme", EVERY_EMAIL.format(ttl=3600))
    scripted_model.enqueue(
        calls(
            send_email(["ann@acme.com"], "To Ann", "a"),
            send_email(["bob@acme.com"], "To Bob", "b"),
            http_request("POST", http_sink.url(), body='{"n": 1}'),
        )
    )
    run = await start(services, acme)
    assert (run.status, run.step_count) == (RunStatus.AWAITING_APPROVAL, 3)
    steps = await services.runs.steps(run.id, acme.tenant.id)
    assert [s.tool for s in steps] == ["send_email", "send_email", "http_request"]
    assert [s.decision["calls"] for s in steps] == [
        {"index": n, "of": 3, "decided_at_step": 1} for n in range(3)
    ]
    # One decision: the first step carries the model's answer and tokens, the others none.
    assert len(steps[0].decision["attempts"]) == 1
    assert steps[1].decision["attempts"] == []
    assert steps[1].prompt_tokens == 0
    # The allowed call ran at once; the two emails wait, each with its own approval.
    waiting = await pending(services, run)
    assert sorted(waiting) == [1, 2]
    [queued] = await services.outbox.list(acme.tenant.id, run_id=run.id)
    assert (queued.kind, queued.step_number) == ("http", 3)

    # Bob's first: the run still waits for Ann's.
    await services.approvals.approve(waiting[2].id, acme.tenant.id, actor="key:approver")
    assert (await services.runs.get(run.id, None)).status is RunStatus.AWAITING_APPROVAL
    assert await services.worker().run_until_idle() == 0  # nothing to claim yet
    await services.approvals.deny(waiting[1].id, acme.tenant.id, actor="key:approver", reason="no")
    assert (await services.runs.get(run.id, None)).status is RunStatus.QUEUED

    scripted_model.enqueue(finish("sent to Bob"))
    done = await drive(services, run)
    assert (done.status, done.output, done.step_count) == (RunStatus.SUCCEEDED, "sent to Bob", 6)
    steps = await services.runs.steps(run.id, acme.tenant.id)
    resumed = steps[3:5]
    assert [s.decision["resumed_step"] for s in resumed] == [1, 2]
    assert resumed[0].result is not None
    assert resumed[0].result["error"]["code"] == "approval_denied"
    assert resumed[1].status is StepStatus.COMPLETED
    assert resumed[1].tool == "send_email"
    # No model call for the decisions: the first answer and the finish only. Three calls at
    # once may take three decisions' worth of tokens.
    assert [r["max_tokens"] for r in scripted_model.chat_requests] == [
        3 * services.settings.agent.decision_max_tokens
    ] * 2
    assert await deliver(services) == 2
    assert [m["Subject"] for m in smtp_sink.messages] == ["To Bob"]
    assert len(http_sink.received) == 1


async def test_decisions_racing_on_one_run_queue_it_exactly_once(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await apply(services, "acme", EVERY_EMAIL.format(ttl=3600))
    scripted_model.enqueue(calls(*(send_email([f"p{n}@acme.com"], f"S{n}", "x") for n in range(3))))
    run = await start(services, acme)
    waiting = await pending(services, run)
    assert sorted(waiting) == [1, 2, 3]
    await asyncio.gather(
        *(services.approvals.approve(a.id, None, actor="key:x") for a in waiting.values())
    )
    assert (await services.runs.get(run.id, None)).status is RunStatus.QUEUED
    assert await pending(services, run) == {}
    scripted_model.enqueue(finish())
    done = await drive(services, run)
    assert (done.status, done.step_count) == (RunStatus.SUCCEEDED, 7)
    effects = await services.outbox.list(acme.tenant.id, run_id=run.id)
    assert sorted(e.step_number for e in effects) == [4, 5, 6]


async def test_a_turn_of_decisions_taken_twice_after_a_crash_queues_each_effect_once(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await apply(services, "acme", EVERY_EMAIL.format(ttl=3600))
    scripted_model.enqueue(
        calls(send_email(["a@acme.com"], "A", "1"), send_email(["b@acme.com"], "B", "2"))
    )
    run = await start(services, acme)
    for approval in (await pending(services, run)).values():
        await services.approvals.approve(approval.id, None, actor="key:x")

    # Worker A takes the whole turn of decisions, then dies before committing it.
    claimed = await services.store.runs.claim_next("worker-a", 30.0)
    assert claimed is not None
    loop = services.run_loop()
    agent = await services.store.agents.get_agent_by_id(claimed.agent_id)
    assert agent is not None
    history = await services.store.runs.list_steps(run.id, None)
    gate = await services.governance.open(claimed, agent, history)
    assert [s.number for s in gate.awaiting] == [1, 2]
    tools = [loop._tools[n] for n in agent.allowed_tools]
    taken = await loop.take_approved_steps(claimed, tools, history, gate)
    assert [len(effects) for _step, _outcome, effects in taken] == [1, 1]
    await services.store.runs.release_lease(run.id, "worker-a")

    scripted_model.enqueue(finish())
    assert (await drive(services, run)).status is RunStatus.SUCCEEDED
    # Worker A comes back and commits its turn: the guard refuses all of it.
    with pytest.raises(Exception, match="no longer leased"):
        await services.store.runs.record_steps(
            [(step, effects) for step, _outcome, effects in taken], "worker-a", taken[-1][1]
        )
    effects = await services.outbox.list(acme.tenant.id, run_id=run.id)
    assert sorted((e.step_number, e.payload["subject"]) for e in effects) == [(3, "A"), (4, "B")]


async def test_one_expired_approval_fails_the_run_and_its_approved_sibling_never_runs(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await apply(services, "acme", EVERY_EMAIL.format(ttl=1))
    scripted_model.enqueue(
        calls(send_email(["a@acme.com"], "A", "1"), send_email(["b@acme.com"], "B", "2"))
    )
    run = await start(services, acme)
    waiting = await pending(services, run)
    await services.approvals.approve(waiting[1].id, None, actor="key:x")
    assert (await services.runs.get(run.id, None)).status is RunStatus.AWAITING_APPROVAL
    await asyncio.sleep(1.1)
    final = await drive(services, run)  # the worker's sweep expires step 2's approval
    assert (final.status, final.failure_code) == (RunStatus.FAILED, "approval_expired")
    assert final.failure_detail == "nobody decided the approval of step 2 in time"
    statuses = {a.step_number: a.status for a in await services.approvals.list(None, run_id=run.id)}
    assert statuses == {1: ApprovalStatus.APPROVED, 2: ApprovalStatus.EXPIRED}
    assert await services.outbox.list(acme.tenant.id, run_id=run.id) == []


async def test_a_denied_call_never_runs_while_its_siblings_do(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    http_sink: HttpSink,
) -> None:
    await apply(services, "acme", '[tools]\ndeny = ["send_email"]\n')
    scripted_model.enqueue(
        calls(
            send_email(["a@acme.com"], "A", "1"),
            http_request("POST", http_sink.url(), body="{}"),
        )
    )
    scripted_model.enqueue(finish())
    run = await start(services, acme)
    assert run.status is RunStatus.SUCCEEDED
    denied, allowed, _finish = await services.runs.steps(run.id, acme.tenant.id)
    assert denied.decision["policy"]["verdict"] == "deny"
    assert allowed.decision["policy"]["verdict"] == "allow"
    [effect] = await services.outbox.list(acme.tenant.id, run_id=run.id)
    assert (effect.kind, effect.step_number) == ("http", 2)


async def test_a_run_with_parallel_approvals_replays_as_a_match(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await apply(services, "acme", EVERY_EMAIL.format(ttl=3600))
    scripted_model.enqueue(
        calls(send_email(["a@acme.com"], "A", "1"), send_email(["b@acme.com"], "B", "2"))
    )
    run = await start(services, acme)
    waiting = await pending(services, run)
    await services.approvals.approve(waiting[1].id, None, actor="key:x")
    await services.approvals.deny(waiting[2].id, None, actor="key:x", reason="not Bob")
    scripted_model.enqueue(finish())
    await drive(services, run)
    report = await services.replays.replay(run.id, None)
    assert (report.match, report.steps_recorded, report.steps_matched) == (True, 5, 5)


async def test_an_agent_without_parallel_calls_cannot_answer_several(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await services.tenancy.put_agent(
        "acme", "single", instructions="One at a time.", tools=EFFECT_TOOLS, actor="test"
    )
    several = calls(send_email(["a@acme.com"], "A", "1"), send_email(["b@acme.com"], "B", "2"))
    for _ in range(services.settings.agent.max_decision_attempts):
        scripted_model.enqueue(several)
    run = await services.runs.submit(acme.principal, "single", "notify")
    await services.worker().run_until_idle()
    failed = await services.runs.get(run.id, None)
    assert (failed.status, failed.failure_code) == (RunStatus.FAILED, "invalid_model_output")
    [step] = await services.runs.steps(run.id, None)
    assert "answer with one call" in step.decision["attempts"][0]["error"]
    # The schema the model was held to offers no "calls" form either.
    assert "calls" not in str(scripted_model.chat_requests[0].get("response_format"))


async def test_a_turn_of_parallel_calls_stays_inside_the_runs_budgets(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    three = calls(*(send_email([f"p{n}@acme.com"], f"S{n}", "x") for n in range(3)))
    await services.budgets.set("acme", period=Period.RUN, limits=Limits(tool_calls=2), actor="t")
    scripted_model.enqueue(three)
    run = await start(services, acme)
    # The third call would be one over: the decision is refused whole, nothing runs.
    assert (run.status, run.step_count) == (RunStatus.BUDGET_EXHAUSTED, 1)
    assert await services.outbox.list(acme.tenant.id, run_id=run.id) == []

    await services.budgets.set("acme", period=Period.RUN, limits=Limits(steps=2), actor="t")
    scripted_model.enqueue(three)
    run = await start(services, acme, "again")
    # Two steps left: two calls are taken, the third is recorded as not taken.
    assert (run.status, run.step_count) == (RunStatus.BUDGET_EXHAUSTED, 2)
    first, _second = await services.runs.steps(run.id, acme.tenant.id)
    assert first.decision["calls_not_taken"] == 1
    assert len(await services.outbox.list(acme.tenant.id, run_id=run.id)) == 2
