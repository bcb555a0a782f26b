"""Approvals over time: expiry ends the run, several approvals wait at once and one run passes
several in turn, a cancelled run's approval cannot be decided, and provenance and data scopes
reach the decisions they should."""

from __future__ import annotations

import asyncio

import pytest

from agent.domain import ApprovalStatus, RunStatus
from agent.policy.errors import ApprovalExpired, RunNotAwaiting
from agent.runtime import Services
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture
from tests.outbox.conftest import SmtpSink, finish, send_email
from tests.policy.conftest import (
    apply,
    deliver,
    drive,
    ingest_supplier_notice,
    pending_approval,
    start,
    start_clerk,
)

EVERY_EMAIL = """
[approvals]
ttl_s = {ttl}

[[rules]]
name = "every-email"
tools = ["send_email"]
effect = "require_approval"
"""


async def test_an_approval_nobody_decides_in_time_fails_its_run(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await apply(services, "acme", EVERY_EMAIL.format(ttl=1))
    scripted_model.enqueue(send_email(["ann@acme.com"], "Hi", "hello"))
    run = await start(services, acme)
    approval = await pending_approval(services, run)
    await asyncio.sleep(1.1)
    # Read as expired at once, even before a sweep ends the run.
    assert (await services.approvals.get(approval.id, acme.tenant.id)).status == "expired"
    final = await drive(services, run)  # the worker's sweep runs before it claims
    assert (final.status, final.failure_code) == (RunStatus.FAILED, "approval_expired")
    assert final.failure_detail == "nobody decided the approval of step 1 in time"
    with pytest.raises(ApprovalExpired):
        await services.approvals.approve(approval.id, acme.tenant.id, actor="late")
    assert await services.outbox.list(acme.tenant.id, run_id=run.id) == []


async def test_approving_an_expired_approval_expires_it_and_fails_the_run(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await apply(services, "acme", EVERY_EMAIL.format(ttl=1))
    scripted_model.enqueue(send_email(["ann@acme.com"], "Hi", "hello"))
    run = await start(services, acme)
    approval = await pending_approval(services, run)
    await asyncio.sleep(1.1)
    with pytest.raises(ApprovalExpired):  # no sweep ran: the decision itself finds it expired
        await services.approvals.approve(approval.id, acme.tenant.id, actor="late")
    ended = await services.runs.get(run.id, acme.tenant.id)
    assert (ended.status, ended.failure_code) == (RunStatus.FAILED, "approval_expired")
    entries = await services.store.audit.list_entries(acme.tenant.id, 20)
    assert "approval.expire" in [e.action for e in entries]


async def test_approvals_wait_side_by_side_and_one_run_passes_several(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    smtp_sink: SmtpSink,
) -> None:
    await apply(services, "acme", EVERY_EMAIL.format(ttl=3600))
    scripted_model.enqueue(send_email(["a@acme.com"], "First", "1"))
    first = await start(services, acme, "first")
    scripted_model.enqueue(send_email(["b@acme.com"], "Other", "x"))
    other = await start(services, acme, "other")
    waiting = await services.approvals.list(acme.tenant.id, status=ApprovalStatus.PENDING)
    assert {a.run_id for a in waiting} == {first.id, other.id}

    # The later run's approval first; the earlier one still waits.
    await services.approvals.approve((await pending_approval(services, other)).id, None, actor="x")
    scripted_model.enqueue(finish())
    assert (await drive(services, other)).status is RunStatus.SUCCEEDED
    assert (await services.runs.get(first.id, None)).status is RunStatus.AWAITING_APPROVAL

    # One run, two approvals in turn: approve, the next email waits again, approve.
    await services.approvals.approve((await pending_approval(services, first)).id, None, actor="x")
    scripted_model.enqueue(send_email(["c@acme.com"], "Second", "2"))
    assert (await drive(services, first)).status is RunStatus.AWAITING_APPROVAL
    approvals = await services.approvals.list(acme.tenant.id, run_id=first.id)
    assert [(a.step_number, a.status) for a in approvals] == [(3, "pending"), (1, "approved")]
    await services.approvals.approve(approvals[0].id, acme.tenant.id, actor="x")
    scripted_model.enqueue(finish())
    done = await drive(services, first)
    assert (done.status, done.step_count) == (RunStatus.SUCCEEDED, 5)
    assert await deliver(services) == 3
    assert sorted(m["Subject"] for m in smtp_sink.messages) == ["First", "Other", "Second"]


async def test_a_cancelled_run_cannot_be_approved_and_its_approval_is_closed(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await apply(services, "acme", EVERY_EMAIL.format(ttl=3600))
    scripted_model.enqueue(send_email(["ann@acme.com"], "Hi", "hello"))
    run = await start(services, acme)
    approval = await pending_approval(services, run)
    cancelled = await services.runs.cancel(run.id, acme.tenant.id, actor="test")
    assert cancelled.status is RunStatus.CANCELLED
    with pytest.raises(RunNotAwaiting):
        await services.approvals.approve(approval.id, acme.tenant.id, actor="x")
    assert (await services.approvals.get(approval.id, None)).status == "cancelled"
    assert await services.outbox.list(acme.tenant.id, run_id=run.id) == []


PROVENANCE = '[provenance]\nwhen_untrusted = "require_approval"\n'


async def test_a_recipient_taken_from_a_document_needs_approval(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await apply(services, "acme", PROVENANCE)
    await ingest_supplier_notice(services, acme)
    scripted_model.enqueue(
        {"tool": "search_documents", "arguments": {"query": "where do invoices go"}}
    )
    scripted_model.enqueue(
        send_email(["billing@supplier-payments.example"], "Invoice", "Please find it attached.")
    )
    run = await start_clerk(services, acme, "Send this month's invoice to our supplier.")
    assert run.status is RunStatus.AWAITING_APPROVAL
    approval = await pending_approval(services, run)
    assert approval.rule == "provenance.when_untrusted"
    sources = {s for taint in approval.provenance for s in taint["sources"]}
    assert any(s.startswith("passage ") for s in sources)
    assert any(s.startswith("step 1 (search_documents)") for s in sources)
    assert {t["where"] for t in approval.provenance} >= {"to[0]", "to[0] (domain)"}

    # The same address given in the task itself is trusted: the email goes without approval.
    scripted_model.enqueue(
        send_email(["billing@supplier-payments.example"], "Invoice", "Attached.")
    )
    scripted_model.enqueue(finish())
    trusted = await start_clerk(
        services, acme, "Email the invoice to billing@supplier-payments.example please."
    )
    assert trusted.status is RunStatus.SUCCEEDED
    first = (await services.runs.steps(trusted.id, acme.tenant.id))[0]
    assert "provenance" not in first.decision
    assert first.decision["policy"]["verdict"] == "allow"


async def test_a_data_scope_limits_what_search_sees(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await services.documents.ingest(
        acme.tenant.id, text="Holiday policy: 25 days.", title="Public", tags=("public",)
    )
    await services.documents.ingest(
        acme.tenant.id, text="Holiday bonus list: secret.", title="Secret", tags=("hr-only",)
    )
    await apply(services, "acme", '[data]\nsearch_tags = ["public"]\n')
    scripted_model.enqueue({"tool": "search_documents", "arguments": {"query": "holiday", "k": 5}})
    scripted_model.enqueue(finish())
    await services.tenancy.put_agent(
        "acme", "reader", instructions="Read.", tools=["search_documents", "finish"],
        retrieval_k=5, actor="test",
    )  # fmt: skip
    run = await services.runs.submit(acme.principal, "reader", "holiday")
    await services.worker().run_until_idle()
    first = (await services.runs.steps(run.id, acme.tenant.id))[0]
    assert [p["title"] for p in first.context["passages"]] == ["Public"]
    assert first.result is not None
    assert [h["title"] for h in first.result["hits"]] == ["Public"]


async def test_a_fork_of_a_waiting_step_does_not_inherit_its_approval(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    smtp_sink: SmtpSink,
) -> None:
    await apply(services, "acme", EVERY_EMAIL.format(ttl=3600))
    scripted_model.enqueue(send_email(["ann@acme.com"], "Hi", "hello"))
    run = await start(services, acme)
    approval = await pending_approval(services, run)
    await services.approvals.approve(approval.id, acme.tenant.id, actor="x")
    scripted_model.enqueue(finish())
    await drive(services, run)

    # The fork copies the step that asked for approval, not the approval: it never runs there.
    fork = await services.forks.fork(run.id, acme.tenant.id, from_step=1, actor="test")
    scripted_model.enqueue(finish("not sent from the fork"))
    forked = await drive(services, fork)
    assert forked.status is RunStatus.SUCCEEDED
    refused = (await services.runs.steps(fork.id, acme.tenant.id))[1]
    assert refused.result is not None
    assert refused.result["error"]["code"] == "approval_missing"
    assert await services.outbox.list(acme.tenant.id, run_id=fork.id) == []
    assert await deliver(services) == 1  # the original run's email only
    assert len(smtp_sink.messages) == 1
