"""Runs over HTTP: submit, let the worker drive them, read them and their steps back."""

from __future__ import annotations

import uuid

import httpx

from agent.runtime import Services
from serving.testing.scripted import ScriptedModelServer
from tests.api.conftest import bearer
from tests.conftest import TenantFixture


async def submit(client: httpx.AsyncClient, tenant: TenantFixture, text: str) -> httpx.Response:
    return await client.post(
        "/v1/runs", json={"agent": "assistant", "input": text}, headers=bearer(tenant.secret)
    )


async def test_submitted_run_is_accepted_with_links(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    response = await submit(client, acme, "How much leave do I get?")
    assert response.status_code == 202, response.text
    body = response.json()
    run_id = uuid.UUID(body["id"])
    assert body["status"] == "queued"
    assert body["agent"] == "assistant"
    assert body["created_at"]
    assert body["links"] == {"self": f"/v1/runs/{run_id}", "steps": f"/v1/runs/{run_id}/steps"}
    assert response.headers["location"] == f"/v1/runs/{run_id}"


async def test_run_completes_and_shows_its_steps(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    await services.documents.ingest(
        acme.tenant.id, title="Leave policy", text="Employees get 30 days of annual leave."
    )
    scripted_model.enqueue({"tool": "search_documents", "arguments": {"query": "annual leave"}})
    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": "30 days"}})
    run_id = (await submit(client, acme, "How much leave do I get?")).json()["id"]

    assert await services.worker().run_until_idle() == 1

    run = (await client.get(f"/v1/runs/{run_id}", headers=bearer(acme.secret))).json()
    assert run["status"] == "succeeded"
    assert run["output"] == "30 days"
    assert run["input"] == "How much leave do I get?"
    assert run["failure"] is None
    assert run["step_count"] == 2
    assert run["usage"]["prompt_tokens"] > 0
    assert run["usage"]["completion_tokens"] > 0
    assert run["started_at"]
    assert run["finished_at"]

    response = await client.get(f"/v1/runs/{run_id}/steps", headers=bearer(acme.secret))
    assert response.status_code == 200
    steps = response.json()["data"]
    assert [s["number"] for s in steps] == [1, 2]
    assert [s["tool"] for s in steps] == ["search_documents", "finish"]
    assert [s["status"] for s in steps] == ["completed", "completed"]
    assert steps[0]["arguments"]["query"] == "annual leave"
    assert steps[0]["result"]["hits"][0]["title"] == "Leave policy"
    assert steps[0]["context"]
    assert steps[0]["decision"]
    assert steps[0]["error_code"] is None
    timings = steps[0]["timings"]
    assert set(timings) == {"model_ms", "tool_ms", "started_at", "finished_at"}
    assert set(steps[0]["usage"]) == {"prompt_tokens", "completion_tokens"}


async def test_failed_run_reports_its_reason(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    for _ in range(services.settings.agent.max_decision_attempts):
        scripted_model.enqueue("this is not an action")
    run_id = (await submit(client, acme, "Anything?")).json()["id"]
    await services.worker().run_until_idle()

    run = (await client.get(f"/v1/runs/{run_id}", headers=bearer(acme.secret))).json()
    assert run["status"] == "failed"
    assert run["output"] is None
    assert run["failure"]["code"] == "invalid_model_output"
    assert isinstance(run["failure"]["detail"], str)


async def test_list_shows_runs_newest_first_and_filters(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": "done"}})
    first = (await submit(client, acme, "first")).json()["id"]
    await services.worker().run_until_idle()
    second = (await submit(client, acme, "second")).json()["id"]

    listed = await client.get("/v1/runs", headers=bearer(acme.secret))
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json()["data"]] == [second, first]

    queued = await client.get("/v1/runs?status=queued", headers=bearer(acme.secret))
    assert [r["id"] for r in queued.json()["data"]] == [second]
    limited = await client.get("/v1/runs?limit=1", headers=bearer(acme.secret))
    assert [r["id"] for r in limited.json()["data"]] == [second]
