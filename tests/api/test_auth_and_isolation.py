"""Who may call, and what a key can see: every /v1 operation needs a live key, and a key sees
only its own tenant's objects. Another tenant's object is a 404 indistinguishable from no object
at all, for every operation and every kind of object, whatever roles the key holds: never a 403,
never a byte of the object, never a change to it.

Operations are enumerated from the served OpenAPI document (`tests.api.operations`): a route
added later is swept too, and one whose path names an object this file does not create, or a
collection operation it has no case for, fails here until it gets one.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from agent.domain import ApprovalStatus, OutboxEffect, Role, RunStatus
from agent.outbox.settings import OutboxSettings
from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.api.conftest import assert_error, bearer
from tests.api.operations import Operation, call, served_operations
from tests.conftest import TenantFixture
from tests.outbox.conftest import http_request, put_effect_agent
from tests.outbox.test_dispatcher import queue

GATED_HOST = "127.0.0.1:9"
"""Where acme's gated request would go; nothing is ever delivered in these tests."""
GATED_POLICY = f"""
[egress]
allow_hosts = ["{GATED_HOST}"]

[[rules]]
name = "orders"
tools = ["http_request"]
effect = "require_approval"
reason = "orders need a buyer's approval"
"""

BAD_AUTHORIZATIONS = [
    None,
    "",
    "Basic dXNlcjpwYXNz",  # the wrong scheme
    "Bearer",  # the scheme with no key
    "Bearer not-a-garrison-key",
    "Bearer gk_unknownunknownunknownunknownunknown",
    "Bearer gk_" + "x" * 500,
]


@pytest.mark.parametrize("authorization", BAD_AUTHORIZATIONS)
async def test_every_v1_operation_refuses_a_bad_key(
    client: httpx.AsyncClient, acme: TenantFixture, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    swept = 0
    for op in await served_operations(client):
        if op.public:
            continue
        response = await call(client, op, headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer", str(op)
        swept += 1
    assert swept >= 18


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


# -- the cross-tenant matrix -------------------------------------------------------------------


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # acme's pending approval comes from an http_request: a host the appliance may call.
    return settings.model_copy(update={"outbox": OutboxSettings(http_allow_hosts=[GATED_HOST])})


class AcmeWorld:
    """Acme's objects of every kind, and what must never reach another tenant about them."""

    def __init__(self, canary: str) -> None:
        self.canary = canary
        self.ids: dict[str, list[str]] = {}
        """Path parameter name -> the ids of acme's objects it can name."""
        self.document_key = "handbook"
        """A key another tenant can guess, and use for a document of its own."""

    def secrets(self, *, besides: str = "") -> list[str]:
        """Strings a foreign answer must not contain (`besides`: the id the caller sent)."""
        found = [self.canary, "acme"]
        return found + [i for ids in self.ids.values() for i in ids if i != besides]


async def build_acme(
    services: Services, acme: TenantFixture, model: ScriptedModelServer
) -> AcmeWorld:
    world = AcmeWorld(canary=f"CANARY-{uuid.uuid4().hex[:12]}")
    # A document with chunks, found by search.
    doc, _ = await services.documents.ingest(
        acme.tenant.id,
        title=f"Handbook {world.canary}",
        text=f"Acme's secret leave policy {world.canary}: ninety days.",
        key=world.document_key,
    )
    # A finished run with steps and events.
    model.enqueue({"tool": "search_documents", "arguments": {"query": world.canary}})
    model.enqueue({"tool": "finish", "arguments": {"answer": f"ninety days {world.canary}"}})
    finished = await services.runs.submit(acme.principal, "assistant", f"Leave? {world.canary}")
    assert await services.worker().run_until_idle() == 1
    # A running run with a queued side effect (an outbox row), claimed by a worker.
    mail = OutboxEffect("email", {"to": ["ceo@acme.example"], "subject": world.canary, "body": "x"})
    effectful = await queue(services, acme, [mail])
    # A run awaiting a person's approval of a request its policy gates.
    await services.policies.apply("acme", None, GATED_POLICY, name="acme.toml", actor="test")
    await put_effect_agent(services, "acme")
    order = json.dumps({"note": world.canary})
    model.enqueue(http_request("POST", f"http://{GATED_HOST}/orders", body=order))
    gated = await services.runs.submit(acme.principal, "notifier", f"Order {world.canary}")
    assert await services.worker().run_until_idle() == 1
    [approval] = await services.approvals.list(acme.tenant.id, run_id=gated.id)
    # A queued run, which a cancel or fork would change.
    queued = await services.runs.submit(acme.principal, "assistant", f"Later {world.canary}")
    # An agent only acme has (globex can guess its name, not use it).
    await services.tenancy.put_agent(
        "acme", "confidential", instructions=f"Secret {world.canary}.", actor="test"
    )
    world.ids = {
        "run_id": [str(finished.id), str(effectful.id), str(gated.id), str(queued.id)],
        "document_id": [str(doc.id)],
        "approval_id": [str(approval.id)],
    }
    return world


def assert_no_leak(response: httpx.Response, world: AcmeWorld, besides: str = "") -> None:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        raise AssertionError(f"a foreign key opened a stream: {response.request.url}")
    for secret in world.secrets(besides=besides):
        assert secret not in response.text, (str(response.request.url), secret)


async def collection_case(
    client: httpx.AsyncClient, op: Operation, key: dict[str, str], world: AcmeWorld
) -> None:
    """An operation on a collection (no object in its path) with the foreign key: the answer
    holds none of acme's data, and nothing of acme's is touched."""
    if op.method == "GET":
        # Search with acme's words (not the canary itself, which the answer may echo back).
        params = {"q": "secret leave policy ninety days"} if op.path == "/v1/search" else {}
        response = await client.get(op.path, headers=key, params=params)
        assert response.status_code == 200, (str(op), response.text)
        assert_no_leak(response, world)
        return
    if op.key == ("POST", "/v1/runs"):
        # acme's agent is no agent of globex's.
        response = await call(client, op, key, body={"agent": "confidential", "input": "hi"})
        assert_error(response, 404, "not_found")
        assert_no_leak(response, world)
        return
    if op.key in (("POST", "/v1/documents"), ("POST", "/v1/documents/batch")):
        # acme's document key names a new document of globex's, never a version of acme's.
        doc = {"title": "Mine", "text": "Globex's own words.", "key": world.document_key}
        body: dict[str, Any] = doc if op.path == "/v1/documents" else {"documents": [doc]}
        response = await call(client, op, key, body=body)
        assert response.status_code in (200, 201), (str(op), response.text)
        assert world.canary not in response.text
        return
    raise AssertionError(f"{op}: add a cross-tenant case for this collection operation")


async def test_every_operation_on_another_tenants_objects_is_not_found(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    globex: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    world = await build_acme(services, acme, scripted_model)
    before = {r.id: r for r in await services.runs.list(acme.tenant.id)}
    # globex's fixture key is its admin: holding every role, a 403 can never stand in for the
    # 404 this is about.
    assert globex.principal.roles == (Role.ADMIN,)
    foreign = bearer(globex.secret)

    swept = 0
    for op in await served_operations(client):
        if op.public:
            continue
        if not op.params:
            await collection_case(client, op, foreign, world)
            continue
        for param in op.params:
            assert param in world.ids, f"{op}: no acme object for {{{param}}}; add one"
        [param] = op.params
        for object_id in world.ids[param]:
            # The owner reads it, so the 404 below is about the tenant, not a bad request.
            if op.method == "GET" and not op.path.endswith("/events"):
                own = await call(client, op, bearer(acme.secret), **{param: object_id})
                assert own.status_code == 200, (str(op), own.text)
            response = await call(client, op, foreign, **{param: object_id})
            error = assert_error(response, 404, "not_found")
            assert "details" not in error
            assert_no_leak(response, world, besides=object_id)
            swept += 1
    # 8 operations on each of 4 runs, 3 on the document, 3 on the approval
    assert swept >= 4 * 8 + 3 + 3

    # Nothing of acme's changed: no run cancelled, resumed or forked, no document replaced.
    after = {r.id: r for r in await services.runs.list(acme.tenant.id)}
    assert after.keys() == before.keys()
    for run_id, run in before.items():
        assert (after[run_id].status, after[run_id].cancel_requested_at) == (
            run.status,
            run.cancel_requested_at,
        )
    assert after[uuid.UUID(world.ids["run_id"][2])].status == RunStatus.AWAITING_APPROVAL
    assert after[uuid.UUID(world.ids["run_id"][3])].status == RunStatus.QUEUED
    [approval_id] = world.ids["approval_id"]
    approval = await services.approvals.get(uuid.UUID(approval_id), acme.tenant.id)
    assert (approval.status, approval.decided_by) == (ApprovalStatus.PENDING, None)
    [doc_id] = world.ids["document_id"]
    doc = await services.documents.get(uuid.UUID(doc_id), acme.tenant.id)
    assert (doc.version, doc.key) == (1, world.document_key)
    assert await services.runs.list(globex.tenant.id) == []
    # And no administrator's change was made in globex's name.
    entries = await services.store.audit.list_entries(None, 1000)
    assert not [e for e in entries if e.actor == globex.principal.actor]


async def test_lists_hold_only_the_callers_objects(
    client: httpx.AsyncClient, acme: TenantFixture, globex: TenantFixture
) -> None:
    mine = {"title": "Shared title", "text": "The same words in both tenants."}
    body = {"agent": "assistant", "input": "hello"}
    for tenant in (acme, globex):
        await client.post("/v1/runs", json=body, headers=bearer(tenant.secret))
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
