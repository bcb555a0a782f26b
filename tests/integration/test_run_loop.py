"""The run loop against a real Postgres and a scripted model over real HTTP."""

from __future__ import annotations

import socket
import sys

import pytest

from agent import codes
from agent.domain import Run, RunStatus, StepStatus
from agent.runtime import Services, Settings, open_services
from serving.settings import ServingSettings
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture, make_tenant


def search(query: str) -> dict[str, object]:
    return {"tool": "search_documents", "arguments": {"query": query}}


def finish(answer: str) -> dict[str, object]:
    return {"tool": "finish", "arguments": {"answer": answer}}


async def run_once(services: Services, fx: TenantFixture, task: str = "question?") -> Run:
    run = await services.runs.submit(fx.principal, "assistant", task)
    assert await services.worker().run_until_idle() == 1
    return await services.runs.get(run.id, fx.tenant.id)


async def test_multi_step_run_records_every_step(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await services.documents.ingest(
        acme.tenant.id, title="Expenses", text="A taxi ride is reimbursed up to 40 euros."
    )
    await services.documents.ingest(
        acme.tenant.id, title="Travel", text="Book trains for trips under four hours."
    )
    scripted_model.enqueue(search("taxi reimbursement"), prompt_tokens=100, completion_tokens=10)
    scripted_model.enqueue(search("trains"), prompt_tokens=120, completion_tokens=11)
    scripted_model.enqueue(finish("Up to 40 euros."), prompt_tokens=140, completion_tokens=12)

    run = await services.runs.submit(
        acme.principal, "assistant", "How much is a taxi ride reimbursed?"
    )
    assert await services.worker().run_until_idle() == 1
    final = await services.runs.get(run.id, acme.tenant.id)
    steps = await services.runs.steps(run.id, acme.tenant.id)

    assert final.status == RunStatus.SUCCEEDED
    assert final.output == "Up to 40 euros."
    assert final.step_count == 3
    assert [s.number for s in steps] == [1, 2, 3]
    assert [s.tool for s in steps] == ["search_documents", "search_documents", "finish"]
    assert all(s.status == StepStatus.COMPLETED for s in steps)
    # Step 1 records the passages retrieved for the task; later steps only reference history.
    assert steps[0].context["passages"][0]["title"] == "Expenses"
    assert steps[2].context["history_steps"] == [1, 2]
    assert steps[0].result is not None
    assert steps[0].result["hits"][0]["title"] == "Expenses"
    # Chat tokens, plus the query embeddings the search tool spent.
    assert steps[2].prompt_tokens == 140
    assert steps[2].completion_tokens == 12
    assert final.prompt_tokens == sum(s.prompt_tokens for s in steps)
    assert final.completion_tokens == 33
    assert all(s.model_ms > 0 for s in steps)
    # Each request was constrained by the action schema, and grew append-only.
    chats = scripted_model.chat_requests
    assert len(chats) == 3
    assert chats[0]["response_format"]["type"] == "json_schema"
    assert chats[1]["messages"][: len(chats[0]["messages"])] == chats[0]["messages"]
    assert len(chats[2]["messages"]) == len(chats[0]["messages"]) + 4


async def test_invalid_output_then_recovery(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.enqueue("Sure! The answer is 42.")
    scripted_model.enqueue({"tool": "finish", "arguments": {}})
    scripted_model.enqueue(finish("42"))
    final = await run_once(services, acme)
    steps = await services.runs.steps(final.id, acme.tenant.id)

    assert final.status == RunStatus.SUCCEEDED
    assert len(steps) == 1
    attempts = steps[0].decision["attempts"]
    assert len(attempts) == 3
    assert "not JSON" in attempts[0]["error"]
    assert "answer" in attempts[1]["error"]
    assert "error" not in attempts[2]
    # The retry showed the model what was wrong.
    retry = scripted_model.chat_requests[1]["messages"]
    assert retry[-1]["role"] == "user"
    assert "invalid" in retry[-1]["content"]


async def test_invalid_output_until_the_limit_fails_the_run(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    for _ in range(3):
        scripted_model.enqueue('{"tool": "delete_everything", "arguments": {}}')
    scripted_model.enqueue(finish("never reached"))
    final = await run_once(services, acme)
    steps = await services.runs.steps(final.id, acme.tenant.id)

    assert final.status == RunStatus.FAILED
    assert final.failure_code == codes.INVALID_MODEL_OUTPUT
    assert scripted_model.pending == 1  # bounded: the fourth answer was never asked for
    assert len(steps) == 1
    assert steps[0].status == StepStatus.FAILED
    assert steps[0].error_code == codes.INVALID_MODEL_OUTPUT
    assert steps[0].tool is None
    assert len(steps[0].decision["attempts"]) == 3


async def test_output_cut_at_max_tokens_counts_as_invalid(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.enqueue(
        '{"tool": "finish", "arguments": {"answer": "the answer is', finish_reason="length"
    )
    scripted_model.enqueue(finish("done"))
    final = await run_once(services, acme)
    steps = await services.runs.steps(final.id, acme.tenant.id)
    assert final.status == RunStatus.SUCCEEDED
    assert steps[0].decision["attempts"][0]["error"] == "model_output_invalid"


async def test_step_limit_ends_a_runaway_run(
    services: Services, scripted_model: ScriptedModelServer
) -> None:
    fx = await make_tenant(services, "loopy", max_steps=2)
    for i in range(5):
        scripted_model.enqueue(search(f"again {i}"))
    final = await run_once(services, fx)
    steps = await services.runs.steps(final.id, fx.tenant.id)
    assert final.status == RunStatus.FAILED
    assert final.failure_code == codes.STEP_LIMIT_EXCEEDED
    assert len(steps) == 2
    assert scripted_model.pending == 3


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_model_fails_with_model_unavailable(
    settings: Settings, database_url: str
) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    cfg = settings.model_copy(update={"serving": ServingSettings(chat_url=dead, embed_url=dead)})
    services = await open_services(cfg, database_url, upgrade=False)
    try:
        fx = await make_tenant(services, "offline")
        final = await run_once(services, fx)
        steps = await services.runs.steps(final.id, fx.tenant.id)
        assert final.status == RunStatus.FAILED
        assert final.failure_code == codes.MODEL_UNAVAILABLE
        assert steps[0].error_code == codes.MODEL_UNAVAILABLE
        assert steps[0].context["retrieval_error"] == codes.MODEL_UNAVAILABLE
    finally:
        await services.aclose()


async def test_unconfigured_model_fails_with_model_unavailable(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Truly nothing configured: not even the bundled CPU registry, whose engines may be running
    # on this machine.
    monkeypatch.setitem(sys.modules, "serving.engine.bundled", None)
    cfg = settings.model_copy(update={"serving": ServingSettings()})
    services = await open_services(cfg, database_url, upgrade=False)
    try:
        fx = await make_tenant(services, "nomodel")
        final = await run_once(services, fx)
        assert final.failure_code == codes.MODEL_UNAVAILABLE
        assert "GARRISON_CHAT_URL" in (final.failure_detail or "")
    finally:
        await services.aclose()


async def test_hung_model_hits_the_deadline(
    settings: Settings, database_url: str, scripted_model: ScriptedModelServer
) -> None:
    url = scripted_model.base_url
    cfg = settings.model_copy(
        update={"serving": ServingSettings(chat_url=url, embed_url=url, model_timeout_s=0.3)}
    )
    services = await open_services(cfg, database_url, upgrade=False)
    try:
        fx = await make_tenant(services, "slow")
        scripted_model.enqueue(finish("too late"), delay_s=2.0)
        final = await run_once(services, fx)
        assert final.failure_code == codes.MODEL_TIMEOUT
    finally:
        await services.aclose()


async def test_first_step_passages_come_from_hybrid_search(
    services: Services, scripted_model: ScriptedModelServer
) -> None:
    """A product code in the task finds its document before the first decision, even when
    other documents are nearer in embedding space."""
    fx = await make_tenant(services, "codes")
    await services.documents.ingest(
        fx.tenant.id, title="Catalogue", text="Item NW-4471 ships in blue."
    )
    for i in range(12):
        await services.documents.ingest(
            fx.tenant.id,
            title=f"Prices {i}",
            text=f"What is the price of the item? The price of item {i} is listed monthly.",
        )
    scripted_model.enqueue(finish("blue"))
    final = await run_once(services, fx, "What is the price of the item NW-4471?")
    steps = await services.runs.steps(final.id, fx.tenant.id)
    titles = [p["title"] for p in steps[0].context["passages"]]
    assert "Catalogue" in titles


async def test_the_task_embedding_is_counted_on_the_first_step(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await services.documents.ingest(acme.tenant.id, title="Leave", text="30 days of leave.")
    scripted_model.enqueue(finish("30 days"), prompt_tokens=50, completion_tokens=5)
    final = await run_once(services, acme, "How many days of leave do I get?")
    steps = await services.runs.steps(final.id, acme.tenant.id)
    # 50 chat tokens plus the embedding of the task that retrieved the passages.
    assert steps[0].prompt_tokens > 50
    assert final.prompt_tokens == steps[0].prompt_tokens
