"""Documents in batches, versions, deletion and `/v1/search` over real HTTP, tenant by tenant."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import assert_error, bearer
from tests.conftest import TenantFixture

PARTS = [
    {
        "key": f"catalogue/{code}",
        "title": f"Part {code}",
        "text": f"Part {code} is a {kind} for the {line} line. Warranty two years.",
        "metadata": {"line": line},
        "tags": ["catalogue", line],
    }
    for code, kind, line in [
        ("XK-4471-B", "pump", "marine"),
        ("XK-4472-B", "valve", "marine"),
        ("AB-1000", "pump", "garden"),
        ("AB-1001", "hose", "garden"),
    ]
]


async def post_batch(client: httpx.AsyncClient, secret: str, docs: list[dict[str, Any]]) -> Any:
    response = await client.post(
        "/v1/documents/batch", json={"documents": docs}, headers=bearer(secret)
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_batch_stores_the_good_and_reports_the_bad(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    empty_page = {"title": "Blank", "text": "<script>x()</script>", "format": "html"}
    body = await post_batch(client, acme.secret, [PARTS[0], empty_page, PARTS[1]])
    assert (body["created"], body["updated"], body["unchanged"], body["failed"]) == (2, 0, 0, 1)
    assert [item["status"] for item in body["data"]] == ["created", "failed", "created"]
    assert body["data"][1]["error"] == {
        "code": "unreadable_document",
        "message": "the HTML has no visible text",
    }
    assert body["data"][0]["document"]["key"] == "catalogue/XK-4471-B"

    again = await post_batch(client, acme.secret, [PARTS[0], {**PARTS[1], "text": "Changed."}])
    assert [i["status"] for i in again["data"]] == ["unchanged", "updated"]
    assert again["data"][1]["document"]["version"] == 2


async def test_posting_a_key_again_replaces_the_document(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    first = await client.post("/v1/documents", json=PARTS[0], headers=bearer(acme.secret))
    assert first.status_code == 201
    changed = {**PARTS[0], "text": "Part XK-4471-B is discontinued."}
    second = await client.post("/v1/documents", json=changed, headers=bearer(acme.secret))
    assert second.status_code == 200
    assert second.json() | {"content_hash": None} == first.json() | {
        "content_hash": None,
        "created": False,
        "updated": True,
        "version": 2,
    }
    doc = (await client.get(second.headers["location"], headers=bearer(acme.secret))).json()
    assert (doc["version"], doc["tags"], doc["key"]) == (
        2,
        ["catalogue", "marine"],
        PARTS[0]["key"],
    )
    chunks = await client.get(f"{second.headers['location']}/chunks", headers=bearer(acme.secret))
    assert [c["content"] for c in chunks.json()["data"]] == ["Part XK-4471-B is discontinued."]


async def test_search_filters_and_explains_itself(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    await post_batch(client, acme.secret, PARTS)
    headers = bearer(acme.secret)
    found = await client.get(
        "/v1/search", params={"q": "XK-4471-B warranty", "k": 2}, headers=headers
    )
    assert found.status_code == 200, found.text
    body = found.json()
    assert len(body["data"]) == 2
    top = body["data"][0]
    assert top["title"] == "Part XK-4471-B"
    assert "keyword" in top["matched_by"]
    assert "XK-4471-B" in top["snippet"]
    assert body["search"]["strategy"] == "exact"  # four chunks: nothing for an index to win

    garden = await client.get(
        "/v1/search",
        params={"q": "pump", "k": 10, "metadata": '{"line": "garden"}', "mode": "vector"},
        headers=headers,
    )
    assert {h["title"] for h in garden.json()["data"]} == {"Part AB-1000", "Part AB-1001"}
    assert all(h["matched_by"] == ["vector"] for h in garden.json()["data"])
    tagged = await client.get(
        "/v1/search",
        params=[("q", "part"), ("tag", "catalogue"), ("tag", "marine")],
        headers=headers,
    )
    assert {h["title"] for h in tagged.json()["data"]} == {"Part XK-4471-B", "Part XK-4472-B"}
    either = await client.get(
        "/v1/search",
        params=[("q", "part"), ("any_tag", "garden"), ("any_tag", "x")],
        headers=headers,
    )
    assert len(either.json()["data"]) == 2


@pytest.mark.parametrize(
    "params",
    [
        {"k": "3"},
        {"q": ""},
        {"q": "x", "k": "0"},
        {"q": "x", "k": "101"},
        {"q": "x", "metadata": "{not json"},
        {"q": "x", "metadata": "[1, 2]"},
        {"q": "x", "mode": "psychic"},
        {"q": "x", "tenant": "globex"},
    ],
)
async def test_invalid_searches_are_422(
    client: httpx.AsyncClient, acme: TenantFixture, params: dict[str, str]
) -> None:
    response = await client.get("/v1/search", params=params, headers=bearer(acme.secret))
    assert_error(response, 422, "invalid_request")


async def test_another_tenant_neither_finds_nor_touches_the_documents(
    client: httpx.AsyncClient, acme: TenantFixture, globex: TenantFixture
) -> None:
    body = await post_batch(client, acme.secret, PARTS)
    doc_id = body["data"][0]["document"]["id"]
    # Globex holds a near-duplicate of its own; it must find that and never acme's.
    theirs = await post_batch(client, globex.secret, [{**PARTS[0], "text": PARTS[0]["text"] + "!"}])
    their_id = theirs["data"][0]["document"]["id"]
    for query in ("XK-4471-B", "pump for the marine line", "warranty"):
        found = await client.get("/v1/search", params={"q": query}, headers=bearer(globex.secret))
        assert {h["document_id"] for h in found.json()["data"]} == {their_id}
    for method, path in (
        ("GET", f"/v1/documents/{doc_id}/chunks"),
        ("DELETE", f"/v1/documents/{doc_id}"),
    ):
        foreign = await client.request(method, path, headers=bearer(globex.secret))
        assert_error(foreign, 404, "not_found")
    assert (
        await client.get(f"/v1/documents/{doc_id}", headers=bearer(acme.secret))
    ).status_code == 200


async def test_deleting_a_document_takes_it_out_of_search(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    body = await post_batch(client, acme.secret, PARTS[:2])
    doc_id = body["data"][0]["document"]["id"]
    deleted = await client.delete(f"/v1/documents/{doc_id}", headers=bearer(acme.secret))
    assert deleted.status_code == 204
    assert deleted.content == b""
    gone = await client.get(f"/v1/documents/{doc_id}", headers=bearer(acme.secret))
    assert_error(gone, 404, "not_found")
    again = await client.delete(f"/v1/documents/{doc_id}", headers=bearer(acme.secret))
    assert_error(again, 404, "not_found")
    found = await client.get("/v1/search", params={"q": "XK-4471-B"}, headers=bearer(acme.secret))
    assert doc_id not in {h["document_id"] for h in found.json()["data"]}
    assert len(found.json()["data"]) == 1
