"""Replay and fork over HTTP: `POST /v1/runs/{id}/replay` and `POST /v1/runs/{id}/fork`."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from agent.runtime import Services
from serving.testing.scripted import ScriptedModelServer
from tests.api.conftest import assert_error, bearer
from tests.conftest import TenantFixture


async def finished_run(
    client: httpx.AsyncClient,
    services: Services,
    fx: TenantFixture,
    model: ScriptedModelServer,
) -> str:
    """A succeeded two-step run (search, finish), submitted over HTTP; its id."""
    await services.documents.ingest(
        fx.tenant.id, title="Leave policy", text="Employees get 30 days of annual leave."
    )
    model.enqueue({"tool": "search_documents", "arguments": {"query": "annual leave"}})
    model.enqueue({"tool": "finish", "arguments": {"answer": "30 days"}})
    submitted = await client.post(
        "/v1/runs",
        json={"agent": "assistant", "input": "How much leave?"},
        headers=bearer(fx.secret),
    )
    assert submitted.status_code == 202, submitted.text
    assert await services.worker().run_until_idle() == 1
    run_id: str = submitted.json()["id"]
    return run_id


async def post(
    client: httpx.AsyncClient, fx: TenantFixture, path: str, body: Any = None
) -> httpx.Response:
    return await client.post(path, json=body, headers=bearer(fx.secret))


async def test_replay_of_an_unchanged_run_matches(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    run_id = await finished_run(client, services, acme, scripted_model)
    calls = len(scripted_model.chat_requests)

    response = await post(client, acme, f"/v1/runs/{run_id}/replay")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "run_id": run_id,
        "match": True,
        "steps_recorded": 2,
        "steps_matched": 2,
        "divergence": None,
    }
    assert len(scripted_model.chat_requests) == calls


async def test_replay_names_the_first_divergent_step(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    run_id = await finished_run(client, services, acme, scripted_model)
    # The agent's instructions changed since the run: step 1's prompt is no longer the same.
    await services.tenancy.put_agent(
        "acme", "assistant", instructions="Be brief.", max_steps=6, actor="test"
    )
    report = (await post(client, acme, f"/v1/runs/{run_id}/replay")).json()
    assert report["match"] is False
    divergence = report["divergence"]
    assert divergence["step"] == 1
    assert divergence["kind"] == "context_changed"
    assert divergence["field"] == "context.prompt_sha256"
    assert divergence["recorded"] != divergence["replayed"]
    assert divergence["message"]


async def test_replay_refuses_a_run_without_steps_and_other_tenants_runs(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    globex: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    run_id = await finished_run(client, services, acme, scripted_model)
    queued = await post(client, acme, "/v1/runs", {"agent": "assistant", "input": "later"})
    assert_error(
        await post(client, acme, f"/v1/runs/{queued.json()['id']}/replay"),
        409,
        "run_has_no_steps",
    )
    assert_error(await post(client, globex, f"/v1/runs/{run_id}/replay"), 404, "not_found")
    assert_error(await post(client, acme, "/v1/runs/not-a-uuid/replay"), 404, "not_found")
    assert_error(await post(client, acme, f"/v1/runs/{uuid.uuid4()}/replay"), 404, "not_found")


async def test_fork_from_a_step_runs_live_from_there(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    run_id = await finished_run(client, services, acme, scripted_model)

    response = await post(client, acme, f"/v1/runs/{run_id}/fork", {"from_step": 1})

    assert response.status_code == 202, response.text
    fork = response.json()
    assert response.headers["location"] == f"/v1/runs/{fork['id']}"
    assert fork["id"] != run_id
    assert fork["status"] == "queued"
    assert (fork["parent_run_id"], fork["forked_from_step"], fork["deployment"]) == (
        run_id,
        1,
        None,
    )
    assert fork["step_count"] == 1
    assert fork["input"] == "How much leave?"

    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": "Thirty days."}})
    assert await services.worker().run_until_idle() == 1
    done = (await client.get(f"/v1/runs/{fork['id']}", headers=bearer(acme.secret))).json()
    assert (done["status"], done["output"]) == ("succeeded", "Thirty days.")
    steps = (await client.get(f"/v1/runs/{fork['id']}/steps", headers=bearer(acme.secret))).json()[
        "data"
    ]
    parent_steps = (
        await client.get(f"/v1/runs/{run_id}/steps", headers=bearer(acme.secret))
    ).json()["data"]
    assert [s["tool"] for s in steps] == ["search_documents", "finish"]
    assert steps[0] == parent_steps[0]


async def test_fork_refusals(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    globex: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    run_id = await finished_run(client, services, acme, scripted_model)
    path = f"/v1/runs/{run_id}/fork"
    for step in (3, -1):
        error = assert_error(
            await post(client, acme, path, {"from_step": step}), 422, "fork_step_out_of_range"
        )
        assert "between 0 and 2" in error["message"]
    assert_error(
        await post(client, acme, path, {"from_step": 1, "deployment": "no-such-model"}),
        422,
        "unknown_deployment",
    )
    assert_error(
        await post(client, acme, path, {"from_step": 1, "extra": 1}), 422, "invalid_request"
    )
    assert_error(await post(client, acme, path, {}), 422, "invalid_request")
    assert_error(await post(client, globex, path, {"from_step": 1}), 404, "not_found")
    listed = (await client.get("/v1/runs", headers=bearer(acme.secret))).json()["data"]
    assert [r["id"] for r in listed] == [run_id]  # nothing was created by the refusals
