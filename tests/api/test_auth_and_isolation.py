"""Who may call, and what a key can see: every /v1 route needs a live key, and a key sees only
its own tenant's objects; another tenant's object is a 404 indistinguishable from no object."""

from __future__ import annotations

import httpx
import pytest

from agent.runtime import Services
from tests.api.conftest import assert_error, bearer
from tests.conftest import TenantFixture

V1_ROUTES = [
    ("POST", "/v1/runs"),
    ("GET", "/v1/runs"),
    ("GET", "/v1/runs/00000000-0000-4000-8000-000000000000"),
    ("GET", "/v1/runs/00000000-0000-4000-8000-000000000000/steps"),
    ("POST", "/v1/documents"),
    ("GET", "/v1/documents"),
    ("GET", "/v1/documents/00000000-0000-4000-8000-000000000000"),
    ("GET", "/v1/documents/00000000-0000-4000-8000-000000000000/chunks"),
    ("DELETE", "/v1/documents/00000000-0000-4000-8000-000000000000"),
    ("POST", "/v1/documents/batch"),
    ("GET", "/v1/search?q=x"),
    ("GET", "/v1/models"),
]
VALID_BODY = {"agent": "assistant", "input": "hello"}


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic dXNlcjpwYXNz",  # the wrong scheme
        "Bearer",  # the scheme with no key
        "Bearer not-a-garrison-key",
        "Bearer gk_unknownunknownunknownunknownunknown",
        "Bearer gk_" + "x" * 500,
    ],
)
async def test_every_v1_route_refuses_a_bad_key(
    client: httpx.AsyncClient, acme: TenantFixture, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in V1_ROUTES:
        response = await client.request(method, path, headers=headers, json=VALID_BODY)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer", (method, path)


async def test_a_revoked_key_stops_working(
    client: httpx.AsyncClient, services: Services, acme: TenantFixture
) -> None:
    before = await client.get("/v1/runs", headers=bearer(acme.secret))
    assert before.status_code == 200
    await services.keys.revoke(acme.principal.key_id, actor="test")
    after = await client.get("/v1/runs", headers=bearer(acme.secret))
    assert_error(after, 401, "unauthorized")


async def test_the_scheme_is_case_insensitive(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    response = await client.get("/v1/runs", headers={"Authorization": f"bearer {acme.secret}"})
    assert response.status_code == 200


async def test_another_tenants_objects_are_not_found(
    client: httpx.AsyncClient, acme: TenantFixture, globex: TenantFixture
) -> None:
    run = await client.post("/v1/runs", json=VALID_BODY, headers=bearer(acme.secret))
    doc = await client.post(
        "/v1/documents", json={"title": "Secret", "text": "acme only"}, headers=bearer(acme.secret)
    )
    run_id, doc_id = run.json()["id"], doc.json()["id"]

    for path in (f"/v1/runs/{run_id}", f"/v1/runs/{run_id}/steps", f"/v1/documents/{doc_id}"):
        assert (await client.get(path, headers=bearer(acme.secret))).status_code == 200
        foreign = await client.get(path, headers=bearer(globex.secret))
        error = assert_error(foreign, 404, "not_found")
        assert "acme" not in foreign.text
        assert "details" not in error


async def test_lists_hold_only_the_callers_objects(
    client: httpx.AsyncClient, acme: TenantFixture, globex: TenantFixture
) -> None:
    mine = {"title": "Shared title", "text": "The same words in both tenants."}
    for tenant in (acme, globex):
        await client.post("/v1/runs", json=VALID_BODY, headers=bearer(tenant.secret))
        created = await client.post("/v1/documents", json=mine, headers=bearer(tenant.secret))
        # The same content in another tenant is a new document, not a hit on acme's.
        assert created.status_code == 201

    for tenant, other in ((acme, globex), (globex, acme)):
        runs = (await client.get("/v1/runs", headers=bearer(tenant.secret))).json()["data"]
        docs = (await client.get("/v1/documents", headers=bearer(tenant.secret))).json()["data"]
        assert len(runs) == 1
        assert len(docs) == 1
        foreign_runs = (await client.get("/v1/runs", headers=bearer(other.secret))).json()
        assert runs[0]["id"] not in {r["id"] for r in foreign_runs["data"]}
        foreign_docs = (await client.get("/v1/documents", headers=bearer(other.secret))).json()
        assert docs[0]["id"] not in {d["id"] for d in foreign_docs["data"]}
