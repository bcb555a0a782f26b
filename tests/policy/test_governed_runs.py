"""Policies at tool dispatch, on real Postgres, a real worker and real SMTP/HTTP receivers: a
denied action never runs, an approval-gated one runs exactly once and only after approval."""

from __future__ import annotations

import pytest

from agent.domain import ApprovalStatus, RunStatus, StepStatus
from agent.errors import CallerError
from agent.policy.errors import ApprovalDecided, PolicyDenied
from agent.runtime import Services, Settings, open_services
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture
from tests.outbox.conftest import HttpSink, SmtpSink, finish, http_request
from tests.policy.conftest import (
    apply,
    deliver,
    drive,
    gated_email,
    last_prompt,
    nothing_sent,
    pending_approval,
    start,
)
from tests.policy.policies import DENY_HTTP, gated_orders


async def test_a_denied_action_never_runs_and_the_model_is_told(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    http_sink: HttpSink,
) -> None:
    assert await apply(services, "acme", DENY_HTTP) == 1
    scripted_model.enqueue(http_request("POST", http_sink.url(), body='{"a": 1}'))
    scripted_model.enqueue(finish("could not"))
    run = await start(services, acme)
    assert run.status is RunStatus.SUCCEEDED

    denied, done = await services.runs.steps(run.id, acme.tenant.id)
    assert denied.status is StepStatus.COMPLETED
    assert denied.tool == "http_request"
    assert denied.result == {
        "error": {
            "code": "policy_denied",
            "message": "the policy denies the tool http_request (rule tools.deny)",
        }
    }
    assert denied.decision["policy"] == {
        "verdict": "deny",
        "rule": "tools.deny",
        "reason": "the policy denies the tool http_request",
        "version": {"tenant": 1, "agent": None},
    }
    assert "policy_denied" in last_prompt(scripted_model.chat_requests)
    assert done.decision["policy"]["verdict"] == "allow"
    assert await services.outbox.list(acme.tenant.id, run_id=run.id) == []
    assert await deliver(services) == 0
    assert http_sink.received == []


async def test_a_run_fails_after_too_many_refusals(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    http_sink: HttpSink,
) -> None:
    await apply(services, "acme", DENY_HTTP)
    for _ in range(3):
        scripted_model.enqueue(http_request("POST", http_sink.url()))
    run = await start(services, acme)
    assert (run.status, run.failure_code, run.step_count) == (
        RunStatus.FAILED,
        "policy_denied",
        3,
    )
    assert run.failure_detail is not None
    assert run.failure_detail.startswith("3 of the run's actions were refused")
    assert http_sink.received == []


async def test_an_approved_action_runs_once_after_approval_even_across_a_restart(
    services: Services,
    settings: Settings,
    database_url: str,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    smtp_sink: SmtpSink,
) -> None:
    run, approval = await gated_email(services, acme, scripted_model)
    assert (approval.step_number, approval.tool, approval.rule) == (
        1,
        "send_email",
        "external-email",
    )
    assert approval.arguments["to"] == ["eve@partner.example"]
    [gated] = await services.runs.steps(run.id, acme.tenant.id)
    assert gated.result == {
        "approval": {
            "id": str(approval.id),
            "status": "pending",
            "rule": "external-email",
            "reason": "email leaving acme.com needs a human",
        }
    }
    # Waiting: nothing queued, nothing delivered, and no worker picks the run up.
    assert await drive(services, run) == await services.runs.get(run.id, acme.tenant.id)
    await nothing_sent(services, acme, run, smtp_sink)

    decided = await services.approvals.approve(approval.id, acme.tenant.id, actor="key:ann")
    assert (decided.status, decided.decided_by, decided.edited) == (
        ApprovalStatus.APPROVED,
        "key:ann",
        False,
    )
    assert (await services.runs.get(run.id, acme.tenant.id)).status is RunStatus.QUEUED
    with pytest.raises(ApprovalDecided):
        await services.approvals.deny(approval.id, acme.tenant.id, actor="key:bob", reason="no")

    # A restart: another process (new services, new worker) resumes from Postgres alone.
    scripted_model.enqueue(finish("Sent the quote."))
    restarted = await open_services(settings, database_url, upgrade=False)
    try:
        final = await drive(restarted, run)
        assert final.status is RunStatus.SUCCEEDED
        steps = await restarted.runs.steps(run.id, acme.tenant.id)
        assert [s.tool for s in steps] == ["send_email", "send_email", "finish"]
        executed = steps[1]
        assert executed.decision["approval"]["status"] == "approved"
        assert executed.decision["resumed_step"] == 1
        assert executed.decision["attempts"] == []
        assert executed.result is not None
        assert executed.result["queued"] is True
        assert len(scripted_model.chat_requests) == 2  # the approved step asked no model
        assert await deliver(restarted) == 1
        assert await drive(restarted, run) == final  # nothing left to do, nothing repeated
        assert await deliver(restarted) == 0
        entries = await restarted.store.audit.list_entries(acme.tenant.id, 50)
    finally:
        await restarted.aclose()
    [message] = smtp_sink.messages
    assert message["To"] == "eve@partner.example"
    assert message["X-Garrison-Idempotency-Key"] == f"{run.id}:2:0"
    actions = [e.action for e in entries]
    assert {"policy.apply", "approval.approve", "action.await_approval", "action.execute"} <= set(
        actions
    )


async def test_an_approved_step_taken_twice_after_a_crash_queues_its_effect_once(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    run, approval = await gated_email(services, acme, scripted_model)
    await services.approvals.approve(approval.id, acme.tenant.id, actor="key:ann")

    # Worker A claims the run and takes the approved step, then dies before committing it.
    claimed = await services.store.runs.claim_next("worker-a", 30.0)
    assert claimed is not None
    loop = services.run_loop()
    agent = await services.store.agents.get_agent_by_id(claimed.agent_id)
    assert agent is not None
    history = await services.store.runs.list_steps(run.id, None)
    gate = await services.governance.open(claimed, agent, history)
    tools = [services.run_loop()._tools[n] for n in agent.allowed_tools]
    step, outcome, effects = await loop.take_approved_step(claimed, tools, history, gate)
    assert len(effects) == 1
    await services.store.runs.release_lease(run.id, "worker-a")  # its lease runs out

    scripted_model.enqueue(finish("done"))
    final = await drive(services, run)
    assert final.status is RunStatus.SUCCEEDED
    # Worker A comes back and commits what it had: the guard refuses it, nothing is written.
    with pytest.raises(Exception, match="no longer leased"):
        await services.store.runs.record_step(step, "worker-a", outcome, effects)
    [effect] = await services.outbox.list(acme.tenant.id, run_id=run.id)
    assert effect.step_number == 2


async def test_a_denied_approval_is_told_to_the_model_and_nothing_runs(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    smtp_sink: SmtpSink,
) -> None:
    run, approval = await gated_email(services, acme, scripted_model)
    with pytest.raises(CallerError):
        await services.approvals.deny(approval.id, acme.tenant.id, actor="key:ann", reason=" ")
    await services.approvals.deny(
        approval.id, acme.tenant.id, actor="key:ann", reason="we do not quote by email"
    )
    scripted_model.enqueue(finish("Not sent."))
    final = await drive(services, run)
    assert final.status is RunStatus.SUCCEEDED
    refused = (await services.runs.steps(run.id, acme.tenant.id))[1]
    assert refused.tool == "send_email"
    assert refused.result == {
        "error": {
            "code": "approval_denied",
            "message": "an approver denied this send_email: we do not quote by email "
            "(rule approval)",
        }
    }
    assert "we do not quote by email" in last_prompt(scripted_model.chat_requests)
    await nothing_sent(services, acme, run, smtp_sink)


async def test_edited_arguments_are_validated_and_checked_by_policy_again(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    http_sink: HttpSink,
) -> None:
    await apply(services, "acme", gated_orders(http_sink.host))
    scripted_model.enqueue(http_request("POST", http_sink.url("/orders"), body='{"qty": 500}'))
    run = await start(services, acme)
    approval = await pending_approval(services, run)

    def edit(**change: object) -> dict[str, object]:
        return {**approval.arguments, **change}

    # To a host the tenant's policy does not allow, or the appliance does not: refused.
    with pytest.raises(PolicyDenied, match=r"egress\.allow_hosts"):
        await services.approvals.approve(
            approval.id, acme.tenant.id, actor="a", arguments=edit(url="http://127.0.0.9:1/x")
        )
    with pytest.raises(CallerError, match="invalid arguments for http_request"):
        await services.approvals.approve(
            approval.id, acme.tenant.id, actor="a", arguments=edit(method="TRACE")
        )
    assert (await services.approvals.get(approval.id, acme.tenant.id)).status == "pending"

    edited = await services.approvals.approve(
        approval.id, acme.tenant.id, actor="a", arguments=edit(body='{"qty": 50}')
    )
    assert edited.edited
    assert edited.final_arguments is not None
    assert edited.final_arguments["body"] == '{"qty": 50}'
    scripted_model.enqueue(finish())
    assert (await drive(services, run)).status is RunStatus.SUCCEEDED
    executed = (await services.runs.steps(run.id, acme.tenant.id))[1]
    assert executed.arguments == edited.final_arguments
    assert executed.decision["approval"]["edited"] is True
    assert await deliver(services) == 1
    [received] = http_sink.received
    assert (received.path, received.body) == ("/orders", {"qty": 50})


async def test_the_global_allow_list_also_refuses_an_edit(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    http_sink: HttpSink,
) -> None:
    await apply(services, "acme", '[[rules]]\nname = "all"\neffect = "require_approval"\n')
    scripted_model.enqueue(http_request("GET", http_sink.url()))
    run = await start(services, acme)
    approval = await pending_approval(services, run)
    with pytest.raises(PolicyDenied, match="not on the allow-list"):
        await services.approvals.approve(
            approval.id,
            acme.tenant.id,
            actor="a",
            arguments={**approval.arguments, "url": "http://127.0.0.9:1/"},
        )
