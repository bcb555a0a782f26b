"""The run lifecycle over HTTP: idempotent submission, cancel, resume, and the eight statuses in
filters and in the OpenAPI document."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from agent.runtime import Services
from serving.testing.scripted import ScriptedModelServer
from tests.api.conftest import assert_error, bearer
from tests.conftest import TenantFixture

ALL_STATUSES = {
    "queued",
    "running",
    "awaiting_approval",
    "succeeded",
    "failed",
    "cancelled",
    "budget_exhausted",
    "parked",
}


async def submit(
    client: httpx.AsyncClient, tenant: TenantFixture, text: str, key: str | None = None
) -> httpx.Response:
    headers = bearer(tenant.secret)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post(
        "/v1/runs", json={"agent": "assistant", "input": text}, headers=headers
    )


async def park(services: Services) -> uuid.UUID:
    """Claim the oldest claimable run and let its worker die on every allowed attempt."""
    claimed = await services.store.runs.claim_next("dying", 0.1, 1)
    assert claimed is not None
    await asyncio.sleep(0.2)
    parked = await services.store.runs.claim_next("next", 30, 1)
    assert parked is not None
    assert parked.status == "parked"
    return parked.id


async def test_a_repeated_key_replays_the_run_and_other_content_conflicts(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    first = await submit(client, acme, "Pay invoice 7", "inv-7")
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    body = first.json()
    assert body["idempotency_key"] == "inv-7"

    again = await submit(client, acme, "Pay invoice 7", "inv-7")
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == f"/v1/runs/{body['id']}"
    assert again.json()["id"] == body["id"]

    other = await submit(client, acme, "Pay invoice 8", "inv-7")
    error = assert_error(other, 409, "idempotency_key_reused")
    assert body["id"] in error["message"]
    listed = (await client.get("/v1/runs", headers=bearer(acme.secret))).json()["data"]
    assert [r["id"] for r in listed] == [body["id"]]


async def test_concurrent_requests_with_one_key_make_one_run(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    responses = await asyncio.gather(*[submit(client, acme, "once", "burst") for _ in range(20)])
    assert sorted(r.status_code for r in responses) == [200] * 19 + [202]
    assert len({r.json()["id"] for r in responses}) == 1
    listed = (await client.get("/v1/runs", headers=bearer(acme.secret))).json()["data"]
    assert len(listed) == 1


async def test_malformed_keys_are_422(client: httpx.AsyncClient, acme: TenantFixture) -> None:
    for key in ("", "x" * 201):
        assert_error(await submit(client, acme, "q", key), 422, "invalid_idempotency_key")
    listed = (await client.get("/v1/runs", headers=bearer(acme.secret))).json()["data"]
    assert listed == []


async def test_cancel_a_queued_run_then_again(
    client: httpx.AsyncClient, acme: TenantFixture, globex: TenantFixture
) -> None:
    run_id = (await submit(client, acme, "q")).json()["id"]
    foreign = await client.post(f"/v1/runs/{run_id}/cancel", headers=bearer(globex.secret))
    assert_error(foreign, 404, "not_found")

    cancelled = await client.post(f"/v1/runs/{run_id}/cancel", headers=bearer(acme.secret))
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled"
    assert body["failure"] == {"code": "cancelled", "detail": "cancelled while queued"}
    assert body["cancel_requested_at"]
    assert body["finished_at"]

    again = await client.post(f"/v1/runs/{run_id}/cancel", headers=bearer(acme.secret))
    assert_error(again, 409, "illegal_transition")
    resumed = await client.post(f"/v1/runs/{run_id}/resume", headers=bearer(acme.secret))
    assert_error(resumed, 409, "illegal_transition")
    unknown = await client.post(f"/v1/runs/{uuid.uuid4()}/cancel", headers=bearer(acme.secret))
    assert_error(unknown, 404, "not_found")


async def test_cancel_a_running_run_takes_effect_after_its_step(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.enqueue({"tool": "search_documents", "arguments": {"query": "q"}}, delay_s=1)
    run_id = (await submit(client, acme, "q")).json()["id"]
    driving = asyncio.create_task(services.worker().run_until_idle())
    for _ in range(200):
        if scripted_model.chat_requests:
            break
        await asyncio.sleep(0.02)

    requested = await client.post(f"/v1/runs/{run_id}/cancel", headers=bearer(acme.secret))
    assert requested.status_code == 200, requested.text
    assert requested.json()["status"] == "running"
    assert requested.json()["cancel_requested_at"]
    await asyncio.wait_for(driving, 10)

    run = (await client.get(f"/v1/runs/{run_id}", headers=bearer(acme.secret))).json()
    assert run["status"] == "cancelled"
    assert run["step_count"] == 1
    assert run["failure"]["code"] == "cancelled"
    steps = (await client.get(f"/v1/runs/{run_id}/steps", headers=bearer(acme.secret))).json()
    assert [s["number"] for s in steps["data"]] == [1]


async def test_resume_a_parked_run_and_filter_by_status(
    client: httpx.AsyncClient, services: Services, acme: TenantFixture
) -> None:
    run_id = (await submit(client, acme, "poison")).json()["id"]
    assert str(await park(services)) == run_id

    parked = await client.get("/v1/runs?status=parked", headers=bearer(acme.secret))
    assert [r["id"] for r in parked.json()["data"]] == [run_id]
    detail = (await client.get(f"/v1/runs/{run_id}", headers=bearer(acme.secret))).json()
    assert detail["status"] == "parked"
    assert detail["failure"]["code"] == "worker_lost"
    assert detail["attempts"] == 1

    resumed = await client.post(f"/v1/runs/{run_id}/resume", headers=bearer(acme.secret))
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "queued"
    assert resumed.json()["attempts"] == 0
    assert resumed.json()["failure"] is None
    again = await client.post(f"/v1/runs/{run_id}/resume", headers=bearer(acme.secret))
    assert_error(again, 409, "illegal_transition")

    for status in ALL_STATUSES:
        listed = await client.get(f"/v1/runs?status={status}", headers=bearer(acme.secret))
        assert listed.status_code == 200, (status, listed.text)
        expected = [run_id] if status == "queued" else []
        assert [r["id"] for r in listed.json()["data"]] == expected, status
    bogus = await client.get("/v1/runs?status=paused", headers=bearer(acme.secret))
    assert_error(bogus, 422, "invalid_request")


async def test_run_detail_shows_the_lifecycle_fields(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    run_id = (await submit(client, acme, "q", "key-1")).json()["id"]
    run = (await client.get(f"/v1/runs/{run_id}", headers=bearer(acme.secret))).json()
    assert run["idempotency_key"] == "key-1"
    assert run["attempts"] == 0
    for field in ("cancel_requested_at", "parent_run_id", "forked_from_step", "deployment"):
        assert field in run
        assert run[field] is None


async def test_openapi_declares_the_lifecycle(client: httpx.AsyncClient) -> None:
    spec: dict[str, Any] = (await client.get("/openapi.json")).json()
    assert set(spec["components"]["schemas"]["RunStatus"]["enum"]) == ALL_STATUSES
    create = spec["paths"]["/v1/runs"]["post"]
    header = next(p for p in create["parameters"] if p["in"] == "header")
    assert header["name"] == "Idempotency-Key"
    assert "Idempotent-Replayed" in create["responses"]["200"]["headers"]
    assert {"202", "409"} <= set(create["responses"])
    for verb in ("cancel", "resume"):
        operation = spec["paths"][f"/v1/runs/{{run_id}}/{verb}"]["post"]
        assert "409" in operation["responses"]
    detail = spec["components"]["schemas"]["RunDetail"]["properties"]
    assert {"cancel_requested_at", "parent_run_id", "forked_from_step", "deployment"} <= set(detail)
