"""Replay of a governed run: the step that carried out a person's decision is not a model
decision, so a run with approvals and refusals replays as a match."""

from __future__ import annotations

from agent.runtime import Services
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture
from tests.outbox.conftest import finish, http_request, send_email
from tests.policy.conftest import apply, drive, pending_approval, start

POLICY = """
[tools]
deny = ["http_request"]

[[rules]]
name = "every-email"
tools = ["send_email"]
effect = "require_approval"
"""


async def test_a_run_with_a_refusal_and_an_approval_replays_as_a_match(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await apply(services, "acme", POLICY)
    scripted_model.enqueue(http_request("GET", "http://127.0.0.1:9/x"))
    scripted_model.enqueue(send_email(["ann@acme.com"], "Hi", "hello"))
    run = await start(services, acme)
    approval = await pending_approval(services, run)
    assert (await services.replays.replay(run.id, None)).match
    await services.approvals.approve(approval.id, None, actor="x")
    scripted_model.enqueue(finish())
    await drive(services, run)
    report = await services.replays.replay(run.id, None)
    assert (report.match, report.steps_recorded, report.steps_matched) == (True, 4, 4)
