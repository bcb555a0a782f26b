"""Replay: today's orchestration code re-driven over recorded runs, against real Postgres.

Runs are recorded by a real worker with the scripted model; replay must then answer from the
recording alone (no model call, nothing written) and name the first step where a deliberately
changed piece of orchestration decides differently.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from sqlalchemy import func, select

from agent import context as context_module
from agent import deciding as deciding_module
from agent import decision as decision_module
from agent import loop as loop_module
from agent.domain import RunStatus, Step
from agent.errors import NotFound
from agent.outbox.settings import OutboxSettings
from agent.replay import NothingToReplay
from agent.replay_compare import DivergenceKind, ReplayReport
from agent.runtime import Services, Settings, open_services
from datastore.schema import OutboxRow, StepRow
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture, make_tenant


def search(query: str) -> dict[str, object]:
    return {"tool": "search_documents", "arguments": {"query": query}}


def finish(answer: str) -> dict[str, object]:
    return {"tool": "finish", "arguments": {"answer": answer}}


async def recorded_run(
    services: Services, fx: TenantFixture, model: ScriptedModelServer, *answers: Any
) -> uuid.UUID:
    """Drive one run with a real worker over the scripted `answers`; its id."""
    await services.documents.ingest(
        fx.tenant.id, title="Expenses", text="A taxi ride is reimbursed up to 40 euros."
    )
    await services.documents.ingest(
        fx.tenant.id, title="Travel", text="Book trains for trips under four hours."
    )
    for answer in answers:
        model.enqueue(answer)
    run = await services.runs.submit(fx.principal, "assistant", "How much is a taxi ride?")
    assert await services.worker().run_until_idle() == 1
    return run.id


THREE_STEPS = (
    "Sure! Here is my plan.",  # invalid: step 1 takes two model calls
    search("taxi reimbursement"),
    search("trains"),
    finish("Up to 40 euros."),
)


async def replay(services: Services, run_id: uuid.UUID, fx: TenantFixture) -> ReplayReport:
    return await services.replays.replay(run_id, fx.tenant.id)


async def count(services: Services, table: Any) -> int:
    async with services.store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_unchanged_code_replays_a_multi_step_run_without_divergence(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    run_id = await recorded_run(services, acme, scripted_model, *THREE_STEPS)
    final = await services.runs.get(run_id, acme.tenant.id)
    assert final.status == RunStatus.SUCCEEDED
    calls, steps_before = len(scripted_model.chat_requests), await count(services, StepRow)
    embeds = sum(r.path.endswith("/embeddings") for r in scripted_model.requests)

    report = await replay(services, run_id, acme)

    assert report.match, report.divergence
    assert report.divergence is None
    assert (report.steps_recorded, report.steps_matched) == (3, 3)
    # Replay answered from the recording: no chat or embedding call, no row written.
    assert len(scripted_model.chat_requests) == calls
    assert sum(r.path.endswith("/embeddings") for r in scripted_model.requests) == embeds
    assert await count(services, StepRow) == steps_before
    # ... and it is repeatable.
    assert await replay(services, run_id, acme) == report


async def test_a_changed_history_format_is_named_at_the_first_step_that_shows_it(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = await recorded_run(services, acme, scripted_model, *THREE_STEPS)
    real = context_module.result_message
    # Step 1's prompt has no tool results yet; step 2's is the first to show one.
    monkeypatch.setattr(
        context_module, "result_message", lambda step, limit: real(step, limit).upper()
    )

    report = await replay(services, run_id, acme)

    assert not report.match
    d = report.divergence
    assert d is not None
    assert (d.step, d.kind, d.field) == (2, DivergenceKind.CONTEXT_CHANGED, "context.prompt_sha256")
    assert d.recorded != d.replayed
    assert report.steps_matched == 1


async def test_changed_instructions_diverge_at_step_one(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    run_id = await recorded_run(services, acme, scripted_model, *THREE_STEPS)
    await services.tenancy.put_agent(
        "acme", "assistant", instructions="Answer tersely.", max_steps=6, actor="test"
    )
    report = await replay(services, run_id, acme)
    assert report.divergence is not None
    assert (report.divergence.step, report.divergence.kind) == (
        1,
        DivergenceKind.CONTEXT_CHANGED,
    )


async def test_a_changed_action_parser_is_a_decision_divergence(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = await recorded_run(services, acme, scripted_model, *THREE_STEPS)
    real = decision_module.parse_action

    def rewrites_queries(raw: str, tools: Mapping[str, Any]) -> decision_module.Action:
        action = real(raw, tools)
        if action.tool != "search_documents":
            return action
        return real(raw.replace("trains", "train timetable"), tools)

    monkeypatch.setattr(deciding_module, "parse_action", rewrites_queries)

    report = await replay(services, run_id, acme)

    d = report.divergence
    assert d is not None
    assert (d.step, d.kind, d.field) == (2, DivergenceKind.DECISION_CHANGED, "action")
    assert d.recorded["arguments"]["query"] == "trains"
    assert d.replayed["arguments"]["query"] == "train timetable"
    assert report.steps_matched == 1


async def test_asking_the_model_more_often_than_recorded_is_a_divergence_not_a_crash(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = await recorded_run(services, acme, scripted_model, *THREE_STEPS)
    real = decision_module.parse_action

    def refuses_finish(raw: str, tools: Mapping[str, Any]) -> decision_module.Action:
        action = real(raw, tools)
        if action.tool == "finish":
            raise decision_module.InvalidAction("finish is not allowed today")
        return action

    monkeypatch.setattr(deciding_module, "parse_action", refuses_finish)

    report = await replay(services, run_id, acme)

    d = report.divergence
    assert d is not None
    assert (d.step, d.kind, d.field) == (3, DivergenceKind.DECISION_CHANGED, "model_calls")
    assert (d.recorded, d.replayed) == (1, 2)


async def test_fewer_model_calls_than_recorded_is_a_divergence(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = await recorded_run(services, acme, scripted_model, *THREE_STEPS)
    real = decision_module.parse_action

    def lenient(raw: str, tools: Mapping[str, Any]) -> decision_module.Action:
        if raw.startswith("Sure!"):  # today's parser would make a search of prose
            return real('{"tool": "search_documents", "arguments": {"query": "taxi'
                        ' reimbursement"}}', tools)  # fmt: skip
        return real(raw, tools)

    monkeypatch.setattr(deciding_module, "parse_action", lenient)

    report = await replay(services, run_id, acme)

    d = report.divergence
    assert d is not None
    assert (d.step, d.kind, d.field) == (1, DivergenceKind.DECISION_CHANGED, "model_calls")
    assert (d.recorded, d.replayed) == (2, 1)


async def test_a_lower_step_limit_ends_the_run_before_a_recorded_step(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    run_id = await recorded_run(services, acme, scripted_model, *THREE_STEPS)
    await services.tenancy.put_agent(
        "acme",
        "assistant",
        instructions="Answer questions from the organisation's documents.",
        max_steps=2,
        actor="test",
    )
    report = await replay(services, run_id, acme)
    d = report.divergence
    assert d is not None
    assert (d.step, d.kind, d.field) == (3, DivergenceKind.MISSING_STEP, "step")
    assert "step_limit_exceeded" in d.message


async def test_a_higher_step_limit_would_take_an_extra_step(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await services.tenancy.put_agent(
        "acme",
        "assistant",
        instructions="Answer questions from the organisation's documents.",
        max_steps=2,
        actor="test",
    )
    run_id = await recorded_run(
        services, acme, scripted_model, search("taxi"), search("trains"), finish("never")
    )
    final = await services.runs.get(run_id, acme.tenant.id)
    assert (final.status, final.failure_code) == (RunStatus.FAILED, "step_limit_exceeded")
    assert (await replay(services, run_id, acme)).match

    await services.tenancy.put_agent(
        "acme",
        "assistant",
        instructions="Answer questions from the organisation's documents.",
        max_steps=3,
        actor="test",
    )
    d = (await replay(services, run_id, acme)).divergence
    assert d is not None
    assert (d.step, d.kind, d.replayed) == (3, DivergenceKind.EXTRA_STEP, 3)


async def test_a_changed_finish_is_an_outcome_divergence(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = await recorded_run(services, acme, scripted_model, *THREE_STEPS)
    real = loop_module.RunLoop.take_step

    async def strips_answers(self: loop_module.RunLoop, *args: Any) -> list[loop_module.TakenStep]:
        [(step, outcome, effects)] = await real(self, *args)
        if outcome.output is not None:
            outcome = type(outcome)(outcome.status, output=outcome.output.rstrip("."))
        return [(step, outcome, effects)]

    monkeypatch.setattr(loop_module.RunLoop, "take_step", strips_answers)

    d = (await replay(services, run_id, acme)).divergence
    assert d is not None
    assert (d.step, d.kind, d.field) == (3, DivergenceKind.OUTCOME_CHANGED, "run.output")
    assert (d.recorded, d.replayed) == ("Up to 40 euros.", "Up to 40 euros")


async def test_recorded_model_errors_are_raised_again(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.enqueue_error(400, "bad request")  # 4xx: not retried, the step fails
    run_id = await recorded_run(services, acme, scripted_model)
    [step] = await services.runs.steps(run_id, acme.tenant.id)
    assert step.error_code == "model_http_error"
    report = await replay(services, run_id, acme)
    assert report.match, report.divergence


async def test_invalid_output_until_the_limit_replays(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    run_id = await recorded_run(services, acme, scripted_model, "no", "still no", "never")
    final = await services.runs.get(run_id, acme.tenant.id)
    assert final.failure_code == "invalid_model_output"
    assert (await replay(services, run_id, acme)).match


async def test_a_run_without_steps_is_refused(services: Services, acme: TenantFixture) -> None:
    run = await services.runs.submit(acme.principal, "assistant", "queued, never driven")
    with pytest.raises(NothingToReplay) as refused:
        await replay(services, run.id, acme)
    assert refused.value.code == "run_has_no_steps"


async def test_another_tenants_run_is_not_found(
    services: Services,
    acme: TenantFixture,
    globex: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    run_id = await recorded_run(services, acme, scripted_model, finish("done"))
    with pytest.raises(NotFound):
        await replay(services, run_id, globex)
    assert (await services.replays.replay(run_id, None)).match  # the operator's view


@pytest.fixture
async def mailing(settings: Settings, database_url: str) -> AsyncIterator[Services]:
    """Services whose `send_email` is configured: a step that sends queues an outbox row (no
    dispatcher runs here, so nothing is delivered)."""
    outbox = OutboxSettings(smtp_host="127.0.0.1", smtp_port=2525, smtp_from="agent@example.org")
    opened = await open_services(
        settings.model_copy(update={"outbox": outbox}), database_url, upgrade=False
    )
    yield opened
    await opened.aclose()


async def test_replaying_a_side_effect_step_queues_nothing(
    mailing: Services, scripted_model: ScriptedModelServer
) -> None:
    fx = await make_tenant(mailing, "acme")
    await mailing.tenancy.put_agent(
        "acme",
        "assistant",
        instructions="Notify people.",
        tools=["send_email", "finish"],
        actor="test",
    )
    email = {"to": ["ops@example.org"], "subject": "Hello", "body": "Taxi limit is 40 euros."}
    run_id = await recorded_run(
        mailing,
        fx,
        scripted_model,
        {"tool": "send_email", "arguments": email},
        finish("sent"),
    )
    steps: list[Step] = await mailing.runs.steps(run_id, fx.tenant.id)
    assert [s.tool for s in steps] == ["send_email", "finish"]
    assert steps[0].result is not None
    assert steps[0].result.get("queued") is True
    assert await count(mailing, OutboxRow) == 1

    report = await replay(mailing, run_id, fx)

    assert report.match, report.divergence
    assert await count(mailing, OutboxRow) == 1
