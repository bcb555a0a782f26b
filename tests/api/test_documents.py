"""Documents over HTTP: ingest (idempotently), read back, and find them from a run."""

from __future__ import annotations

import uuid

import httpx

from agent.runtime import Services
from serving.testing.scripted import ScriptedModelServer
from tests.api.conftest import bearer
from tests.conftest import TenantFixture

LEAVE = {
    "title": "Leave policy",
    "text": "Employees get 30 days of annual leave. Unused days carry over until March.",
    "metadata": {"owner": "hr", "tags": ["policy", "leave"], "version": 3},
    "source": "intranet://hr/leave",
}


async def test_ingest_creates_then_is_idempotent(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    first = await client.post("/v1/documents", json=LEAVE, headers=bearer(acme.secret))
    assert first.status_code == 201, first.text
    created = first.json()
    assert created["created"] is True
    assert created["title"] == "Leave policy"
    assert created["chunk_count"] == 1
    assert len(created["content_hash"]) == 64
    assert first.headers["location"] == f"/v1/documents/{created['id']}"

    again = await client.post("/v1/documents", json=LEAVE, headers=bearer(acme.secret))
    assert again.status_code == 200, again.text
    assert again.json() == {**created, "created": False}


async def test_document_reads_back_with_metadata(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    doc_id = (await client.post("/v1/documents", json=LEAVE, headers=bearer(acme.secret))).json()[
        "id"
    ]
    response = await client.get(f"/v1/documents/{doc_id}", headers=bearer(acme.secret))
    assert response.status_code == 200
    doc = response.json()
    assert uuid.UUID(doc["id"]) == uuid.UUID(doc_id)
    assert doc["metadata"] == LEAVE["metadata"]
    assert doc["source"] == LEAVE["source"]
    assert doc["created_at"]


async def test_list_documents_newest_first_with_limit(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    ids = []
    for n in range(3):
        body = {"title": f"Memo {n}", "text": f"Memo number {n}."}
        response = await client.post("/v1/documents", json=body, headers=bearer(acme.secret))
        ids.append(response.json()["id"])
    listed = await client.get("/v1/documents", headers=bearer(acme.secret))
    assert [d["id"] for d in listed.json()["data"]] == ids[::-1]
    limited = await client.get("/v1/documents?limit=2", headers=bearer(acme.secret))
    assert [d["id"] for d in limited.json()["data"]] == ids[:0:-1]


async def test_run_search_finds_a_document_posted_over_http(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    await client.post(
        "/v1/documents",
        json={"title": "Parking", "text": "Visitors park in lot C behind the canteen."},
        headers=bearer(acme.secret),
    )
    posted = await client.post("/v1/documents", json=LEAVE, headers=bearer(acme.secret))
    scripted_model.enqueue({"tool": "search_documents", "arguments": {"query": "annual leave"}})
    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": "30 days"}})
    run = await client.post(
        "/v1/runs",
        json={"agent": "assistant", "input": "How many days of annual leave?"},
        headers=bearer(acme.secret),
    )
    await services.worker().run_until_idle()

    steps = await client.get(f"/v1/runs/{run.json()['id']}/steps", headers=bearer(acme.secret))
    hits = steps.json()["data"][0]["result"]["hits"]
    assert hits[0]["title"] == "Leave policy"
    assert hits[0]["document_id"] == posted.json()["id"]
