"""`/v1/approvals` over real HTTP: approvers see and decide their own tenant's approvals only;
edits are checked; every refusal has its code."""

from __future__ import annotations

import httpx

from agent.domain import Role, RunStatus
from agent.runtime import Services
from serving.testing.scripted import ScriptedModelServer
from tests.api.conftest import assert_error, bearer
from tests.conftest import TenantFixture
from tests.outbox.conftest import HttpSink, finish, http_request
from tests.policy.conftest import apply, approver_key, deliver, drive, pending_approval, start
from tests.policy.policies import gated_orders


async def test_an_approver_decides_through_the_api(
    services: Services,
    client: httpx.AsyncClient,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    http_sink: HttpSink,
) -> None:
    await apply(services, "acme", gated_orders(http_sink.host))
    scripted_model.enqueue(http_request("POST", http_sink.url("/orders"), body='{"qty": 500}'))
    run = await start(services, acme)
    approval = await pending_approval(services, run)
    key = bearer(await approver_key(services, "acme"))

    listed = await client.get("/v1/approvals", params={"status": "pending"}, headers=key)
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["data"]
    assert item["id"] == str(approval.id)
    assert (item["tool"], item["step"], item["rule"], item["status"]) == (
        "http_request",
        1,
        "orders",
        "pending",
    )
    assert item["reason"] == "orders need a buyer's approval"
    assert item["policy_version"] == {"tenant": 1, "agent": None}
    assert item["links"] == {"self": f"/v1/approvals/{approval.id}", "run": f"/v1/runs/{run.id}"}
    shown = await client.get(f"/v1/approvals/{approval.id}", headers=key)
    assert shown.json() == item

    path = f"/v1/approvals/{approval.id}"
    edited = {**approval.arguments, "url": "http://127.0.0.9:1/orders"}
    refused = await client.post(f"{path}/approve", json={"arguments": edited}, headers=key)
    assert_error(refused, 409, "policy_denied")
    invalid = await client.post(f"{path}/approve", json={"arguments": {"url": 5}}, headers=key)
    assert_error(invalid, 422, "invalid_request")
    assert_error(await client.post(f"{path}/deny", json={}, headers=key), 422, "invalid_request")
    assert_error(
        await client.post(f"{path}/approve", json={"typo": 1}, headers=key), 422, "invalid_request"
    )

    smaller = {**approval.arguments, "body": '{"qty": 5}'}
    approved = await client.post(
        f"{path}/approve", json={"arguments": smaller, "reason": "5 is enough"}, headers=key
    )
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert (body["status"], body["edited"], body["decision_reason"]) == (
        "approved",
        True,
        "5 is enough",
    )
    assert body["final_arguments"]["body"] == '{"qty": 5}'
    assert body["decided_by"].startswith("key:")
    again = await client.post(f"{path}/deny", json={"reason": "changed my mind"}, headers=key)
    assert_error(again, 409, "approval_decided")

    scripted_model.enqueue(finish())
    assert (await drive(services, run)).status is RunStatus.SUCCEEDED
    assert await deliver(services) == 1
    assert [r.body for r in http_sink.received] == [{"qty": 5}]


async def test_approvals_are_invisible_to_other_tenants_and_to_clients(
    services: Services,
    client: httpx.AsyncClient,
    acme: TenantFixture,
    globex: TenantFixture,
    scripted_model: ScriptedModelServer,
    http_sink: HttpSink,
) -> None:
    await apply(services, "acme", gated_orders(http_sink.host))
    scripted_model.enqueue(http_request("GET", http_sink.url()))
    run = await start(services, acme)
    approval = await pending_approval(services, run)
    path = f"/v1/approvals/{approval.id}"

    foreign = bearer(await approver_key(services, "globex"))
    assert (await client.get("/v1/approvals", headers=foreign)).json() == {"data": []}
    assert_error(await client.get(path, headers=foreign), 404, "not_found")
    assert_error(await client.post(f"{path}/approve", json={}, headers=foreign), 404, "not_found")
    denied = await client.post(f"{path}/deny", json={"reason": "mine now"}, headers=foreign)
    assert_error(denied, 404, "not_found")
    assert_error(await client.get("/v1/approvals/not-a-uuid", headers=foreign), 404, "not_found")

    # The key that submits work cannot approve its own side effects.
    _key, secret = await services.keys.create("acme", "submitter", [Role.CLIENT], actor="test")
    client_key = bearer(secret)
    assert_error(await client.get("/v1/approvals", headers=client_key), 403, "forbidden")
    assert_error(
        await client.post(f"{path}/approve", json={}, headers=client_key), 403, "forbidden"
    )
    assert_error(await client.get("/v1/approvals"), 401, "unauthorized")

    assert (await services.approvals.get(approval.id, None)).status == "pending"
    assert (await services.runs.get(run.id, None)).status is RunStatus.AWAITING_APPROVAL
