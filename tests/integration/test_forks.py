"""Forks: a new run with the parent's first N steps copied and the rest driven live by a real
worker, optionally pinned to another deployment; side effects are never copied."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from agent.domain import Run, RunStatus, Step
from agent.errors import NotFound
from agent.outbox.settings import OutboxSettings
from agent.runtime import Services, Settings, open_services
from agent.services.forks import ForkStepOutOfRange, UnknownDeployment
from datastore.schema import OutboxRow
from serving.settings import ServingSettings
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture, make_tenant
from tests.modelsfile import external, write_models_file
from tests.serving.conftest import closed_port_url


def search(query: str) -> dict[str, object]:
    return {"tool": "search_documents", "arguments": {"query": query}}


def finish(answer: str) -> dict[str, object]:
    return {"tool": "finish", "arguments": {"answer": answer}}


async def parent_run(services: Services, fx: TenantFixture, model: ScriptedModelServer) -> Run:
    """A succeeded three-step run: search, search, finish."""
    await services.documents.ingest(
        fx.tenant.id, title="Expenses", text="A taxi ride is reimbursed up to 40 euros."
    )
    for answer in (search("taxi"), search("trains"), finish("Up to 40 euros.")):
        model.enqueue(answer)
    run = await services.runs.submit(fx.principal, "assistant", "How much is a taxi ride?")
    assert await services.worker().run_until_idle() == 1
    final = await services.runs.get(run.id, fx.tenant.id)
    assert final.status == RunStatus.SUCCEEDED
    return final


def as_of(step: Step, run_id: uuid.UUID) -> Step:
    return dataclasses.replace(step, run_id=run_id)


async def outbox_rows(services: Services, run_id: uuid.UUID) -> int:
    query = select(func.count()).select_from(OutboxRow).where(OutboxRow.run_id == run_id)
    async with services.store.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


@pytest.mark.parametrize("from_step", [0, 1, 3])
async def test_fork_copies_steps_and_the_rest_runs_live(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer, from_step: int
) -> None:
    parent = await parent_run(services, acme, scripted_model)
    parent_steps = await services.runs.steps(parent.id, acme.tenant.id)

    fork = await services.forks.fork(
        parent.id,
        acme.tenant.id,
        from_step=from_step,
        api_key_id=acme.principal.key_id,
        actor="test",
    )

    assert fork.id != parent.id
    assert (fork.status, fork.step_count) == (RunStatus.QUEUED, from_step)
    assert (fork.parent_run_id, fork.forked_from_step, fork.deployment) == (
        parent.id,
        from_step,
        None,
    )
    assert (fork.input, fork.agent_id, fork.tenant_id) == (
        parent.input,
        parent.agent_id,
        parent.tenant_id,
    )
    copied = parent_steps[:from_step]
    assert fork.prompt_tokens == sum(s.prompt_tokens for s in copied)
    assert fork.completion_tokens == sum(s.completion_tokens for s in copied)
    assert await services.runs.steps(fork.id, acme.tenant.id) == [as_of(s, fork.id) for s in copied]

    calls = len(scripted_model.chat_requests)
    scripted_model.enqueue(finish("Forty euros, live."))
    assert await services.worker().run_until_idle() == 1
    final = await services.runs.get(fork.id, acme.tenant.id)
    steps = await services.runs.steps(fork.id, acme.tenant.id)

    assert (final.status, final.output) == (RunStatus.SUCCEEDED, "Forty euros, live.")
    assert [s.number for s in steps] == list(range(1, from_step + 2))
    assert steps[:from_step] == [as_of(s, fork.id) for s in copied]  # untouched by the worker
    assert len(scripted_model.chat_requests) == calls + 1  # only step N+1 asked the model
    live = scripted_model.chat_requests[-1]["messages"]
    # The live step saw the copied history: one action and one result per copied step.
    assert len(live) == 2 + 2 * from_step
    if from_step:
        assert steps[0].context["passages"] == parent_steps[0].context["passages"]
    # The parent is unchanged, and the fork replays against today's code like any run.
    assert await services.runs.steps(parent.id, acme.tenant.id) == parent_steps
    assert (await services.replays.replay(fork.id, acme.tenant.id)).match


async def test_a_fork_from_a_running_run_takes_only_committed_steps(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    parent = await parent_run(services, acme, scripted_model)
    with pytest.raises(ForkStepOutOfRange) as wrong:
        await services.forks.fork(parent.id, acme.tenant.id, from_step=4, actor="test")
    assert wrong.value.code == "fork_step_out_of_range"
    with pytest.raises(ForkStepOutOfRange):
        await services.forks.fork(parent.id, acme.tenant.id, from_step=-1, actor="test")
    queued = await services.runs.submit(acme.principal, "assistant", "not started")
    with pytest.raises(ForkStepOutOfRange):
        await services.forks.fork(queued.id, acme.tenant.id, from_step=1, actor="test")
    fork = await services.forks.fork(queued.id, acme.tenant.id, from_step=0, actor="test")
    assert fork.step_count == 0


async def test_another_tenants_run_cannot_be_forked(
    services: Services,
    acme: TenantFixture,
    globex: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    parent = await parent_run(services, acme, scripted_model)
    with pytest.raises(NotFound):
        await services.forks.fork(parent.id, globex.tenant.id, from_step=1, actor="test")
    # The operator (no tenant) may fork any run; the fork stays in the parent's tenant.
    fork = await services.forks.fork(parent.id, None, from_step=1, actor="test")
    assert fork.tenant_id == acme.tenant.id


async def test_side_effects_are_never_copied(
    settings: Settings, database_url: str, scripted_model: ScriptedModelServer
) -> None:
    outbox = OutboxSettings(smtp_host="127.0.0.1", smtp_port=2525, smtp_from="agent@example.org")
    services = await open_services(
        settings.model_copy(update={"outbox": outbox}), database_url, upgrade=False
    )
    try:
        fx = await make_tenant(services, "acme")
        await services.tenancy.put_agent(
            "acme", "assistant", instructions="Notify.", tools=["send_email", "finish"], actor="t"
        )
        email = {"to": ["ops@example.org"], "subject": "Hi", "body": "Taxi limit: 40 euros."}
        scripted_model.enqueue({"tool": "send_email", "arguments": email})
        scripted_model.enqueue(finish("sent"))
        parent = await services.runs.submit(fx.principal, "assistant", "Tell ops.")
        assert await services.worker().run_until_idle() == 1
        assert await outbox_rows(services, parent.id) == 1

        fork = await services.forks.fork(parent.id, fx.tenant.id, from_step=1, actor="test")
        [copied] = await services.runs.steps(fork.id, fx.tenant.id)
        assert copied.tool == "send_email"
        assert await outbox_rows(services, fork.id) == 0

        scripted_model.enqueue(finish("already sent"))
        assert await services.worker().run_until_idle() == 1
        assert (await services.runs.get(fork.id, fx.tenant.id)).status == RunStatus.SUCCEEDED
        assert await outbox_rows(services, fork.id) == 0
        assert await outbox_rows(services, parent.id) == 1
    finally:
        await services.aclose()


# -- pinned deployments ------------------------------------------------------------------------


@pytest.fixture
def second_model() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as server:
        yield server


@pytest.fixture
async def routed(
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    scripted_model: ScriptedModelServer,
    second_model: ScriptedModelServer,
) -> AsyncIterator[Services]:
    """`decide` routes to `primary` only; `other` and `dead` serve it too but only when pinned."""
    path = write_models_file(
        tmp_path / "models.toml",
        external("primary", scripted_model.base_url),
        external("other", second_model.base_url),
        external("dead", closed_port_url()),
        external("vectors", second_model.base_url, ("embed",)),
        routes={"decide": ["primary"]},
    )
    serving = ServingSettings(models_file=path, model_timeout_s=5.0)
    services = await open_services(
        settings.model_copy(update={"serving": serving}), database_url, upgrade=False
    )
    yield services
    await services.aclose()


def deployments(steps: list[Step]) -> list[Any]:
    return [s.decision.get("deployment") for s in steps]


async def test_a_fork_pinned_to_a_deployment_is_decided_by_it(
    routed: Services, scripted_model: ScriptedModelServer, second_model: ScriptedModelServer
) -> None:
    fx = await make_tenant(routed, "acme")
    parent = await parent_run(routed, fx, scripted_model)
    assert deployments(await routed.runs.steps(parent.id, fx.tenant.id)) == ["primary"] * 3

    fork = await routed.forks.fork(
        parent.id, fx.tenant.id, from_step=1, deployment="other", actor="test"
    )
    assert fork.deployment == "other"
    second_model.enqueue(search("trains"))
    second_model.enqueue(finish("Forty, says the other model."))
    primary_calls = len(scripted_model.chat_requests)
    assert await routed.worker().run_until_idle() == 1

    final = await routed.runs.get(fork.id, fx.tenant.id)
    steps = await routed.runs.steps(fork.id, fx.tenant.id)
    assert (final.status, final.output) == (RunStatus.SUCCEEDED, "Forty, says the other model.")
    assert deployments(steps) == ["primary", "other", "other"]
    assert all(a["deployment"] == "other" for s in steps[1:] for a in s.decision["attempts"])
    assert len(scripted_model.chat_requests) == primary_calls

    # A fork of the fork keeps its pin unless told otherwise.
    again = await routed.forks.fork(fork.id, fx.tenant.id, from_step=2, actor="test")
    assert again.deployment == "other"
    back = await routed.forks.fork(
        fork.id, fx.tenant.id, from_step=2, deployment="primary", actor="test"
    )
    assert back.deployment == "primary"


async def test_a_pinned_deployment_that_is_down_fails_the_run_without_fallback(
    routed: Services, scripted_model: ScriptedModelServer
) -> None:
    fx = await make_tenant(routed, "acme")
    parent = await parent_run(routed, fx, scripted_model)
    fork = await routed.forks.fork(
        parent.id, fx.tenant.id, from_step=1, deployment="dead", actor="test"
    )
    scripted_model.enqueue(finish("primary would have answered"))
    assert await routed.worker().run_until_idle() == 1

    final = await routed.runs.get(fork.id, fx.tenant.id)
    assert (final.status, final.failure_code) == (RunStatus.FAILED, "model_unavailable")
    assert scripted_model.pending == 1  # the primary was never asked


async def test_the_pin_must_name_a_chat_deployment(
    routed: Services, scripted_model: ScriptedModelServer
) -> None:
    fx = await make_tenant(routed, "acme")
    parent = await parent_run(routed, fx, scripted_model)
    for name in ("nope", "vectors"):
        with pytest.raises(UnknownDeployment) as refused:
            await routed.forks.fork(
                parent.id, fx.tenant.id, from_step=1, deployment=name, actor="test"
            )
        assert refused.value.code == "unknown_deployment"
        assert "dead, other, primary" in refused.value.message


async def test_a_fork_from_a_failed_step_goes_on_and_replays(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    for answer in ("no", "still no", "never"):
        scripted_model.enqueue(answer)
    parent = await services.runs.submit(acme.principal, "assistant", "Anything?")
    assert await services.worker().run_until_idle() == 1
    assert (await services.runs.get(parent.id, acme.tenant.id)).status == RunStatus.FAILED

    fork = await services.forks.fork(parent.id, acme.tenant.id, from_step=1, actor="test")
    scripted_model.enqueue(finish("a second chance"))
    assert await services.worker().run_until_idle() == 1
    final = await services.runs.get(fork.id, acme.tenant.id)
    assert (final.status, final.output) == (RunStatus.SUCCEEDED, "a second chance")
    report = await services.replays.replay(fork.id, acme.tenant.id)
    assert report.match, report.divergence
    assert report.steps_matched == 2
