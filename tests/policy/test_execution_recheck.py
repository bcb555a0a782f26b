"""An approved action is judged once more when it is about to run, on real Postgres with a real
worker and SMTP receiver: it is refused if the agent lost the tool, if its arguments no longer
validate, or if a deny rule was added while the run waited; and provenance is traced again on
what runs, so an approver's edit that brings in a recipient from a document meets the untrusted
rule."""

from __future__ import annotations

from dataclasses import replace

import psycopg

from agent.domain import Run, RunStatus, Step, StepStatus
from agent.policy.provenance import Provenance
from agent.runtime import Services
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture
from tests.outbox.conftest import SmtpSink, finish, send_email
from tests.policy.conftest import (
    apply,
    drive,
    gated_email,
    ingest_supplier_notice,
    last_prompt,
    nothing_sent,
    pending_approval,
    start_clerk,
)
from tests.policy.policies import EXTERNAL_EMAIL
from tests.policy.test_provenance import step as provenance_step

NO_PARTNERS = """
[[rules]]
name = "no-partners"
tools = ["send_email"]
effect = "deny"
reason = "we stopped emailing partners"
when = [{ arg = "to", part = "domain", equals = "partner.example" }]
"""


async def approved_then_executed(
    services: Services, fx: TenantFixture, model: ScriptedModelServer, run: Run
) -> tuple[Run, Step]:
    """Drive an approved run through its execution step and the model's finish: the run, and
    the step that carried out (or refused) the approved action."""
    model.enqueue(finish("As far as I could."))
    run = await drive(services, run)
    assert run.status is RunStatus.SUCCEEDED, (run.failure_code, run.failure_detail)
    _gated, executed, _finish = await services.runs.steps(run.id, fx.tenant.id)
    assert executed.decision["resumed_step"] == 1
    return run, executed


async def test_an_approved_action_is_refused_when_the_agent_lost_the_tool_meanwhile(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    smtp_sink: SmtpSink,
) -> None:
    run, approval = await gated_email(services, acme, scripted_model)
    await services.approvals.approve(approval.id, acme.tenant.id, actor="key:ann")
    await services.tenancy.put_agent(
        "acme", "notifier", instructions="Notify systems only.", tools=["http_request", "finish"],
        retrieval_k=0, actor="test",
    )  # fmt: skip
    run, executed = await approved_then_executed(services, acme, scripted_model, run)
    assert (executed.status, executed.tool) == (StepStatus.COMPLETED, "send_email")
    assert executed.result == {
        "error": {
            "code": "tool_not_allowed",
            "message": "the agent may no longer call send_email (rule agent.tools)",
        }
    }
    assert executed.decision["approval"]["status"] == "approved"
    assert "tool_not_allowed" in last_prompt(scripted_model.chat_requests)
    await nothing_sent(services, acme, run, smtp_sink)


async def test_an_approved_action_whose_arguments_no_longer_validate_is_refused(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    smtp_sink: SmtpSink,
    database_url: str,
) -> None:
    run, approval = await gated_email(services, acme, scripted_model)
    await services.approvals.approve(approval.id, acme.tenant.id, actor="key:ann")
    # As an approval decided under an earlier send_email that took a `cc` would read now.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE approvals SET final_arguments = final_arguments || "
            """'{"cc": ["boss@partner.example"]}'::jsonb WHERE id = %s""",
            (approval.id,),
        )
    run, executed = await approved_then_executed(services, acme, scripted_model, run)
    assert executed.result is not None
    error = executed.result["error"]
    assert error["code"] == "policy_denied"
    assert error["message"].startswith("the approved arguments are no longer valid:")
    assert "cc" in error["message"]
    assert executed.arguments is not None
    assert executed.arguments["cc"] == ["boss@partner.example"]  # what was refused, as stored
    await nothing_sent(services, acme, run, smtp_sink)


async def test_an_approved_action_is_refused_by_a_deny_rule_added_while_it_waited(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    smtp_sink: SmtpSink,
) -> None:
    run, approval = await gated_email(services, acme, scripted_model)
    assert await apply(services, "acme", EXTERNAL_EMAIL + NO_PARTNERS) == 2
    # Approved as proposed: the service judges edits only, the execution judges everything.
    await services.approvals.approve(approval.id, acme.tenant.id, actor="key:ann")
    run, executed = await approved_then_executed(services, acme, scripted_model, run)
    assert executed.result == {
        "error": {
            "code": "policy_denied",
            "message": "we stopped emailing partners (rule no-partners)",
        }
    }
    assert executed.decision["policy"] == {
        "verdict": "deny",
        "rule": "no-partners",
        "reason": "we stopped emailing partners",
        "version": {"tenant": 2, "agent": None},
    }
    await nothing_sent(services, acme, run, smtp_sink)


UNTRUSTED_DENIED = """
[provenance]
when_untrusted = "deny"

[[rules]]
name = "every-email"
tools = ["send_email"]
effect = "require_approval"
"""


async def test_an_edited_recipient_from_a_document_is_judged_by_the_untrusted_rule(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    smtp_sink: SmtpSink,
) -> None:
    await apply(services, "acme", UNTRUSTED_DENIED)
    await ingest_supplier_notice(services, acme)
    scripted_model.enqueue(send_email(["ann@acme.com"], "Invoice", "Please find it attached."))
    run = await start_clerk(services, acme, "Send this month's invoice to ann@acme.com.")
    assert run.status is RunStatus.AWAITING_APPROVAL
    [gated] = await services.runs.steps(run.id, acme.tenant.id)
    assert any(p["title"] == "Supplier notice" for p in gated.context["passages"])
    assert "provenance" not in gated.decision  # the task named this recipient
    approval = await pending_approval(services, run)

    # The approver takes the address the document planted. Deciding, the service sees no
    # provenance (it has no run to trace); the execution does.
    edited = {**approval.arguments, "to": ["billing@supplier-payments.example"]}
    await services.approvals.approve(approval.id, acme.tenant.id, actor="key:ann", arguments=edited)
    scripted_model.enqueue(finish("Not sent."))
    assert (await drive(services, run)).status is RunStatus.SUCCEEDED
    executed = (await services.runs.steps(run.id, acme.tenant.id))[1]
    assert executed.arguments == edited
    assert executed.result == {
        "error": {
            "code": "policy_denied",
            "message": "the to of this send_email came from documents or tool output, not from "
            "the task (rule provenance.when_untrusted)",
        }
    }
    assert executed.decision["policy"]["rule"] == "provenance.when_untrusted"
    taints = executed.decision["provenance"]
    assert {t["where"] for t in taints} >= {"to[0]", "to[0] (domain)"}
    assert all(s.startswith("passage ") for t in taints for s in t["sources"])
    await nothing_sent(services, acme, run, smtp_sink)


def test_recorded_taints_stay_with_the_values_an_approver_kept() -> None:
    """Nothing this run read holds the value any more (say its source step was forked away):
    the taint recorded on the proposal still applies while the value is there, and not once the
    approver replaced it."""
    recorded: list[object] = [
        {"path": "to", "where": "to[0]", "value": "Billing@Vendor.example", "sources": ["x"]},
        {"path": "subject", "where": "subject", "value": "gone", "sources": ["y"]},
        "not a taint",
    ]
    fresh = Provenance.of_run("task", "instructions", [])
    kept = fresh.approved({"to": ["billing@vendor.example"], "subject": "Hi"}, recorded)
    assert [(t.path, t.where, t.sources) for t in kept] == [("to", "to[0]", ("x",))]
    assert fresh.approved({"to": ["ann@acme.com"], "subject": "Hi"}, recorded) == []
    assert fresh.approved({"to": ["ann@acme.com"]}, None) == []


def test_an_approval_request_is_not_content_the_run_read() -> None:
    """The gated step's result is the gate's own words (the rule's reason), not a source: the
    approved email to an acme.com address is not tainted by a reason that names acme.com."""
    said = provenance_step(1, "send_email", {"approval": {"reason": "email leaving acme.com"}})
    gated = replace(said, decision={"approval": {"id": "a"}})
    assert Provenance.of_run("mail ann", "help", [gated]).taints({"to": ["ann@acme.com"]}) == []
    # The same text as a tool's output is content the run read.
    read = Provenance.of_run("mail ann", "help", [said])
    assert [t.where for t in read.taints({"to": ["ann@acme.com"]})] == ["to[0] (domain)"]
