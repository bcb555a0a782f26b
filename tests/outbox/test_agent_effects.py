"""From decision to delivery: an agent's side effects reach real SMTP and HTTP receivers once,
and only when the step that asked for them committed."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace

import psycopg
import pytest
import sqlalchemy.exc

from agent.domain import OutboxEffect, Run, RunOutcome, RunStatus, Step, effect_key
from agent.errors import LeaseLost
from agent.outbox.dispatcher import Dispatcher
from agent.outbox.settings import OutboxSettings
from agent.ports import OutboxItem, OutboxStatus
from agent.runtime import Services, Settings, open_services
from agent.tools import build_tools
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture, make_tenant
from tests.outbox.conftest import (
    SENDER,
    HttpSink,
    SmtpSink,
    finish,
    http_request,
    put_effect_agent,
    send_email,
)


async def run_notifier(services: Services, fx: TenantFixture, task: str = "notify") -> Run:
    await put_effect_agent(services, fx.tenant.name)
    run = await services.runs.submit(fx.principal, "notifier", task)
    assert await services.worker().run_until_idle() == 1
    return await services.runs.get(run.id, fx.tenant.id)


async def deliver_everything(
    dispatcher: Dispatcher, services: Services, timeout: float = 10
) -> None:
    """Run the dispatcher until no row is pending or being delivered (retries included)."""
    deadline = time.monotonic() + timeout
    while True:
        await dispatcher.run_once()
        live = [
            i
            for i in await services.store.outbox.list_items(tenant_id=None)
            if i.status in (OutboxStatus.PENDING, OutboxStatus.DELIVERING)
        ]
        if not live:
            return
        assert time.monotonic() < deadline, f"still undelivered: {live}"
        await asyncio.sleep(0.02)


async def effects_of(services: Services, run: Run) -> list[OutboxItem]:
    return await services.outbox.list(run.tenant_id, run_id=run.id)


async def test_an_agent_email_is_delivered_exactly_once_with_its_content(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    smtp_sink: SmtpSink,
) -> None:
    scripted_model.enqueue(
        send_email(["ops@example.org", "lead@example.org"], "Disk 91% full", "Please look.")
    )
    scripted_model.enqueue(finish("Told ops."))
    run = await run_notifier(services, acme)
    assert run.status == RunStatus.SUCCEEDED

    step = (await services.runs.steps(run.id, acme.tenant.id))[0]
    key = f"{run.id}:1:0"
    assert step.result == {
        "queued": True,
        "kind": "email",
        "to": ["ops@example.org", "lead@example.org"],
        "idempotency_key": key,
    }
    # Queued with the step, delivered by nobody yet: the tool itself sent nothing.
    [queued] = await effects_of(services, run)
    assert (queued.status, queued.idempotency_key, queued.attempts) == ("pending", key, 0)
    assert smtp_sink.messages == []

    dispatcher = services.dispatcher()
    try:
        assert await dispatcher.run_until_idle() == 1
        assert await dispatcher.run_until_idle() == 0  # nothing is due twice
    finally:
        await dispatcher.aclose()

    [message] = smtp_sink.messages
    assert message["From"] == SENDER
    assert message["To"] == "ops@example.org, lead@example.org"
    assert message["Subject"] == "Disk 91% full"
    assert message.get_content().strip() == "Please look."
    assert message["X-Garrison-Idempotency-Key"] == key
    assert message["Message-ID"] == f"<garrison.{run.id}.1.0@garrison.test>"
    assert smtp_sink.envelopes == [(SENDER, ["ops@example.org", "lead@example.org"])]
    [done] = await effects_of(services, run)
    assert (done.status, done.attempts) == ("delivered", 1)
    assert done.delivered_at is not None
    assert done.response is not None
    assert done.response["message_id"] == message["Message-ID"]


async def test_an_agent_http_request_reaches_an_allowed_host_once_with_its_key(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    http_sink: HttpSink,
) -> None:
    scripted_model.enqueue(
        http_request(
            "POST",
            http_sink.url("/tickets"),
            body='{"title": "disk full", "priority": 2}',
            headers=["X-Team: ops"],
        )
    )
    scripted_model.enqueue(finish())
    run = await run_notifier(services, acme)
    assert run.status == RunStatus.SUCCEEDED

    dispatcher = services.dispatcher()
    try:
        assert await dispatcher.run_until_idle() == 1
    finally:
        await dispatcher.aclose()

    [request] = http_sink.received
    assert (request.method, request.path) == ("POST", "/tickets")
    assert request.body == {"title": "disk full", "priority": 2}
    assert request.headers["idempotency-key"] == f"{run.id}:1:0"
    assert request.headers["x-team"] == "ops"
    assert request.headers["content-type"] == "application/json"
    [done] = await effects_of(services, run)
    assert done.status == "delivered"
    assert done.response == {"status": 200, "body": '{"status": 200}'}


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://intranet.example.org/hook", "not on the allow-list"),
        ("ftp://127.0.0.1/hook", "scheme 'ftp' is not allowed"),
        ("http://user:secret@{host}/hook", "credentials in the URL"),
        ("http://127.0.0.1:1/hook", "not on the allow-list"),  # allowed host, other port
    ],
)
async def test_a_disallowed_destination_is_refused_and_nothing_is_queued_or_sent(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    http_sink: HttpSink,
    url: str,
    reason: str,
) -> None:
    scripted_model.enqueue(http_request("POST", url.format(host=http_sink.host)))
    scripted_model.enqueue(finish("could not"))
    run = await run_notifier(services, acme)

    # The refusal is a result the model saw (and could act on), recorded on the step.
    assert run.status == RunStatus.SUCCEEDED
    step = (await services.runs.steps(run.id, acme.tenant.id))[0]
    assert step.result is not None
    assert step.result["error"]["code"] == "egress_denied"
    assert reason in step.result["error"]["message"]
    assert await effects_of(services, run) == []
    dispatcher = services.dispatcher()
    try:
        assert await dispatcher.run_until_idle() == 0
    finally:
        await dispatcher.aclose()
    assert http_sink.received == []


async def test_send_email_without_a_relay_is_refused(
    settings: Settings, database_url: str, scripted_model: ScriptedModelServer
) -> None:
    unconfigured = settings.model_copy(update={"outbox": OutboxSettings()})
    services = await open_services(unconfigured, database_url, upgrade=False)
    try:
        fx = await make_tenant(services, "acme")
        scripted_model.enqueue(send_email(["a@example.org"], "hi", "there"))
        scripted_model.enqueue(finish())
        run = await run_notifier(services, fx)
        step = (await services.runs.steps(run.id, fx.tenant.id))[0]
        assert step.result is not None
        assert step.result["error"]["code"] == "email_not_configured"
        assert await effects_of(services, run) == []
    finally:
        await services.aclose()


async def _one_email_step(
    services: Services, fx: TenantFixture, scripted_model: ScriptedModelServer, worker: str
) -> tuple[Run, Step, RunOutcome, tuple[OutboxEffect, ...]]:
    """Claim a run and take (but not commit) a step whose tool queued an email."""
    await put_effect_agent(services, fx.tenant.name)
    scripted_model.enqueue(send_email(["a@example.org"], "s", "b"))
    run = await services.runs.submit(fx.principal, "notifier", "notify")
    claimed = await services.store.runs.claim_next(worker, 0.2)
    assert claimed is not None
    assert claimed.id == run.id
    loop = services.run_loop()
    agent = await services.store.agents.get_agent(fx.tenant.id, "notifier")
    assert agent is not None
    by_name = build_tools(services.settings.outbox)
    tools = [by_name[name] for name in agent.allowed_tools]
    [(step, outcome, effects)] = await loop.take_step(claimed, agent, tools, None, [])
    assert len(effects) == 1
    return claimed, step, outcome, effects


async def test_a_step_that_did_not_commit_leaves_no_outbox_row(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    smtp_sink: SmtpSink,
) -> None:
    run, step, outcome, effects = await _one_email_step(services, acme, scripted_model, "w-a")

    # The lease ran out mid-step and another worker took the run: the late commit is refused.
    await asyncio.sleep(0.3)
    assert await services.store.runs.claim_next("w-b", 30) is not None
    with pytest.raises(LeaseLost):
        await services.store.runs.record_step(step, "w-a", outcome, effects)

    # The new owner's commit fails inside its transaction (an effect the table refuses):
    # the step and its valid effect roll back together.
    bad = (*effects, OutboxEffect("sms", {"to": "+1"}))
    # Whichever driver layer the commit goes through, the database's refusal surfaces as is.
    with pytest.raises((sqlalchemy.exc.IntegrityError, psycopg.IntegrityError)):
        await services.store.runs.record_step(step, "w-b", outcome, bad)

    assert await services.runs.steps(run.id, acme.tenant.id) == []
    assert await effects_of(services, run) == []
    dispatcher = services.dispatcher()
    try:
        assert await dispatcher.run_until_idle() == 0
    finally:
        await dispatcher.aclose()
    assert smtp_sink.messages == []

    # The same step committed properly queues exactly one row, under the step's key.
    await services.store.runs.record_step(replace(step), "w-b", outcome, effects)
    [row] = await effects_of(services, run)
    assert row.idempotency_key == f"{run.id}:1:0"


def test_effect_keys_are_unique_per_run_step_and_call() -> None:
    run = uuid.uuid4()
    keys = {effect_key(run, s, c) for s in range(1, 4) for c in range(3)}
    assert len(keys) == 9
