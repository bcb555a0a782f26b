"""Access tags over real HTTP: a restricted key finds, reads, deletes and stores only documents
carrying one of its tags (others are `not_found`, as another tenant's), and its runs retrieve
only those; a key without tags sees its whole tenant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from agent.domain import Role
from agent.runtime import Services
from serving.testing.scripted import ScriptedModelServer
from tests.api.conftest import assert_error, bearer
from tests.conftest import TenantFixture

QUERY = "falcon launch code rotation note exactly"
NOTES = 6


def documents() -> list[dict[str, Any]]:
    """Per note: `Visible` (tagged `hr`), and near-duplicates that say "exactly" as the query
    does and carry an identifier: `Hidden` (tagged `eng`), `Untagged`."""
    docs: list[dict[str, Any]] = []
    for i in range(NOTES):
        note = f"Falcon launch code rotation note {i}."
        docs += [
            {
                "title": f"Visible {i}",
                "text": f"{note} Filed by the archive team, see the binder.",
                "tags": ["hr"],
            },
            {"title": f"Hidden {i}", "text": f"{note} Exactly XK-4471-{i}.", "tags": ["eng"]},
            {"title": f"Untagged {i}", "text": f"{note} Exactly XK-4471-{i} copy."},
        ]
    return docs


async def key(services: Services, tags: Sequence[str] | None, role: Role = Role.OPERATOR) -> str:
    _key, secret = await services.keys.create(
        "acme", "scoped", [role], actor="test", access_tags=tags
    )
    return secret


async def plant(client: httpx.AsyncClient, secret: str) -> dict[str, str]:
    """The documents stored by the tenant-wide key; their ids by title."""
    response = await client.post(
        "/v1/documents/batch", json={"documents": documents()}, headers=bearer(secret)
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 3 * NOTES
    return {i["document"]["title"]: i["document"]["id"] for i in response.json()["data"]}


def kinds(titles: Sequence[str]) -> set[str]:
    return {t.split()[0] for t in titles}


async def test_search_list_show_and_delete_see_only_the_keys_documents(
    client: httpx.AsyncClient, services: Services, acme: TenantFixture
) -> None:
    ids = await plant(client, acme.secret)
    hr = bearer(await key(services, ["hr"]))
    wide = bearer(await key(services, None))

    for mode in ("vector", "hybrid"):
        params: dict[str, str | int] = {"q": QUERY, "k": 5, "mode": mode}
        found = (await client.get("/v1/search", params=params, headers=hr)).json()
        assert len(found["data"]) == 5
        assert kinds([h["title"] for h in found["data"]]) == {"Visible"}
        assert found["search"]["estimated_rows"] == NOTES
        everyone = (await client.get("/v1/search", params=params, headers=wide)).json()
        assert kinds([h["title"] for h in everyone["data"][:4]]) == {"Hidden", "Untagged"}
    # Exactly k when k documents are visible; and the caller's own tag filter narrows further.
    exact = await client.get("/v1/search", params={"q": QUERY, "k": NOTES}, headers=hr)
    assert sorted(h["title"] for h in exact.json()["data"]) == [f"Visible {i}" for i in range(6)]
    own = await client.get(
        "/v1/search", params=[("q", QUERY), ("any_tag", "eng")], headers=hr
    )  # the key's `hr` and the caller's `eng` must both hold
    assert own.json()["data"] == []
    by_code = await client.get("/v1/search", params={"q": "XK-4471-2"}, headers=hr)
    assert kinds([h["title"] for h in by_code.json()["data"]]) == {"Visible"}

    listed = (await client.get("/v1/documents", params={"limit": 200}, headers=hr)).json()
    assert kinds([d["title"] for d in listed["data"]]) == {"Visible"}
    assert len(listed["data"]) == NOTES
    everything = (await client.get("/v1/documents", params={"limit": 200}, headers=wide)).json()
    assert len(everything["data"]) == 3 * NOTES

    visible = ids["Visible 0"]
    assert (await client.get(f"/v1/documents/{visible}", headers=hr)).status_code == 200
    assert (await client.get(f"/v1/documents/{visible}/chunks", headers=hr)).status_code == 200
    for hidden in (ids["Hidden 0"], ids["Untagged 0"]):
        assert_error(await client.get(f"/v1/documents/{hidden}", headers=hr), 404, "not_found")
        chunks = await client.get(f"/v1/documents/{hidden}/chunks", headers=hr)
        assert_error(chunks, 404, "not_found")
        assert_error(await client.delete(f"/v1/documents/{hidden}", headers=hr), 404, "not_found")
        assert (await client.get(f"/v1/documents/{hidden}", headers=wide)).status_code == 200
    assert (await client.delete(f"/v1/documents/{visible}", headers=hr)).status_code == 204
    gone = await client.get(f"/v1/documents/{visible}", headers=wide)
    assert_error(gone, 404, "not_found")


async def test_a_restricted_key_cannot_store_a_document_it_could_not_see(
    client: httpx.AsyncClient, services: Services, acme: TenantFixture
) -> None:
    hr = bearer(await key(services, ["hr", "legal"]))
    for tags in ([], ["eng"]):
        refused = await client.post(
            "/v1/documents", json={"title": "T", "text": "Text.", "tags": tags}, headers=hr
        )
        error = assert_error(refused, 403, "access_tag_required")
        assert "hr, legal" in error["message"]
    held = await client.post(
        "/v1/documents",
        json={"title": "CI", "text": "Nightly.", "key": "ops/ci", "tags": ["eng"]},
        headers=bearer(acme.secret),
    )
    assert held.status_code == 201
    takeover = {"title": "Mine", "text": "Mine now.", "key": "ops/ci", "tags": ["hr"]}
    assert_error(
        await client.post("/v1/documents", json=takeover, headers=hr), 403, "access_tag_required"
    )
    stored = await client.post(
        "/v1/documents", json={"title": "Pay", "text": "Pay day.", "tags": ["legal"]}, headers=hr
    )
    assert stored.status_code == 201, stored.text

    batch = await client.post(
        "/v1/documents/batch",
        json={"documents": [{"text": "Untagged."}, {"text": "Tagged.", "tags": ["hr"]}]},
        headers=hr,
    )
    items = batch.json()["data"]
    assert [i["status"] for i in items] == ["failed", "created"]
    assert items[0]["error"]["code"] == "access_tag_required"
    still = await client.get(held.headers["location"], headers=bearer(acme.secret))
    assert still.json()["title"] == "CI"


async def test_a_run_submitted_by_a_restricted_key_retrieves_only_its_documents(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    await plant(client, acme.secret)
    hr = bearer(await key(services, ["hr"], Role.CLIENT))
    scripted_model.enqueue({"tool": "search_documents", "arguments": {"query": QUERY, "k": 5}})
    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": "done"}})
    run = await client.post("/v1/runs", json={"agent": "assistant", "input": QUERY}, headers=hr)
    assert run.status_code == 202, run.text
    assert await services.worker().run_until_idle() == 1

    steps = (await client.get(f"/v1/runs/{run.json()['id']}/steps", headers=hr)).json()["data"]
    passages = [p["title"] for p in steps[0]["context"]["passages"]]
    assert len(passages) == acme.agent.retrieval_k
    assert kinds(passages) == {"Visible"}
    hits = [h["title"] for h in steps[0]["result"]["hits"]]
    assert len(hits) == 5
    assert kinds(hits) == {"Visible"}
