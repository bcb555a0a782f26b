"""Runs over real HTTP for a key with access tags: it sees only the runs submitted under a scope
within its tags (their steps, events, side effects and approvals with them); any other run of
its tenant is 404 `not_found` for every operation, as another tenant's is. A key without tags
sees them all, as before."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import pytest

from agent.domain import Principal, Role, Run, RunStatus
from agent.outbox.settings import OutboxSettings
from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.api.conftest import assert_error, bearer
from tests.conftest import TenantFixture
from tests.outbox.conftest import finish, put_effect_agent, send_email

EXTERNAL_EMAIL = """
[[rules]]
name = "external-email"
tools = ["send_email"]
effect = "require_approval"
when = [{ arg = "to", part = "domain", not_in = ["acme.com"] }]
"""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Email configured, so that runs queue their emails in the outbox; nothing delivers them
    (no dispatcher runs here), so no mail server is needed."""
    outbox = OutboxSettings(smtp_host="127.0.0.1", smtp_from="garrison@acme.com")
    return settings.model_copy(update={"outbox": outbox})


@dataclass(frozen=True)
class Key:
    principal: Principal
    headers: dict[str, str]


async def key(services: Services, tags: Sequence[str] | None, *roles: Role) -> Key:
    name = "+".join(tags) if tags is not None else "wide"
    _key, secret = await services.keys.create(
        "acme", name, roles or [Role.OPERATOR], actor="test", access_tags=tags
    )
    return Key(await services.keys.authenticate(secret), bearer(secret))


async def emailing_run(
    services: Services,
    scripted: ScriptedModelServer,
    principal: Principal,
    to: str,
    *,
    gated: bool = False,
) -> Run:
    """A notifier run of `principal`'s, driven to its end after one email, or, `gated`, to the
    approval the email waits for."""
    scripted.enqueue(send_email([to], "Quote", "100"))
    if not gated:
        scripted.enqueue(finish())
    run = await services.runs.submit(principal, "notifier", f"email {to}")
    await services.worker().run_until_idle()
    return await services.runs.get(run.id, None)


async def test_a_restricted_key_sees_only_the_runs_within_its_tags(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    await put_effect_agent(services, "acme")
    hr = await key(services, ["hr"])
    broad_key = await key(services, ["eng", "hr"])
    wide = await emailing_run(services, scripted_model, acme.principal, "ann@acme.com")
    mine = await emailing_run(services, scripted_model, hr.principal, "bob@acme.com")
    broad = await emailing_run(services, scripted_model, broad_key.principal, "cy@acme.com")
    # A run whose scope is empty retrieved nothing at all: nothing in it is hidden from anyone.
    empty = (await services.runs.request(acme.tenant.id, "assistant", "hello", access_tags=())).run
    assert {r.status for r in (wide, mine, broad)} == {RunStatus.SUCCEEDED}
    assert (wide.access_tags, mine.access_tags, broad.access_tags) == (None, ("hr",), ("eng", "hr"))

    async def listed(headers: dict[str, str]) -> set[str]:
        response = await client.get("/v1/runs", params={"limit": 200}, headers=headers)
        assert response.status_code == 200, response.text
        return {r["id"] for r in response.json()["data"]}

    assert await listed(hr.headers) == {str(mine.id), str(empty.id)}
    assert await listed(broad_key.headers) == {str(mine.id), str(broad.id), str(empty.id)}
    everything = {str(r.id) for r in (wide, mine, broad, empty)}
    assert await listed(bearer(acme.secret)) == everything

    for hidden in (wide, broad):
        base = f"/v1/runs/{hidden.id}"
        for response in (
            await client.get(base, headers=hr.headers),
            await client.get(f"{base}/steps", headers=hr.headers),
            await client.get(f"{base}/events", headers=hr.headers),
            await client.get(f"{base}/effects", headers=hr.headers),
            await client.post(f"{base}/cancel", headers=hr.headers),
            await client.post(f"{base}/resume", headers=hr.headers),
            await client.post(f"{base}/replay", headers=hr.headers),
            await client.post(f"{base}/fork", json={"from_step": 0}, headers=hr.headers),
        ):
            error = assert_error(response, 404, "not_found")
            assert error["message"] == f"run {hidden.id} not found"
        # Still there, unchanged, for a key of the whole tenant.
        seen = await client.get(base, headers=bearer(acme.secret))
        assert seen.json()["status"] == "succeeded"
    assert len(await listed(bearer(acme.secret))) == 4  # no fork was made

    base = f"/v1/runs/{mine.id}"
    assert (await client.get(base, headers=hr.headers)).json()["status"] == "succeeded"
    steps = (await client.get(f"{base}/steps", headers=hr.headers)).json()["data"]
    assert [s["tool"] for s in steps] == ["send_email", "finish"]
    effects = (await client.get(f"{base}/effects", headers=hr.headers)).json()["data"]
    assert [e["kind"] for e in effects] == ["email"]
    assert "bob@acme.com" in str(effects[0]["payload"])
    events = await client.get(f"{base}/events", headers=hr.headers)
    assert events.status_code == 200
    assert "succeeded" in events.text
    assert (await client.post(f"{base}/replay", headers=hr.headers)).json()["match"] is True
    fork = await client.post(f"{base}/fork", json={"from_step": 1}, headers=hr.headers)
    assert fork.status_code == 202, fork.text
    fork_id = fork.json()["id"]
    cancelled = await client.post(f"/v1/runs/{fork_id}/cancel", headers=hr.headers)
    assert cancelled.json()["status"] == "cancelled"
    assert await listed(hr.headers) == {str(mine.id), str(empty.id), fork_id}
    parked = await client.post(f"/v1/runs/{empty.id}/resume", headers=hr.headers)
    assert_error(parked, 409, "illegal_transition")  # visible, so the usual answer


async def test_a_restricted_approver_decides_only_approvals_of_runs_it_sees(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    await put_effect_agent(services, "acme")
    await services.policies.apply("acme", None, EXTERNAL_EMAIL, name="p.toml", actor="test")
    hr_client = await key(services, ["hr"], Role.CLIENT)
    theirs = await emailing_run(
        services, scripted_model, acme.principal, "eve@partner.example", gated=True
    )
    mine = await emailing_run(
        services, scripted_model, hr_client.principal, "dan@partner.example", gated=True
    )
    assert {theirs.status, mine.status} == {RunStatus.AWAITING_APPROVAL}
    hr = await key(services, ["hr"], Role.APPROVER)
    wide = await key(services, None, Role.APPROVER)

    async def pending(headers: dict[str, str]) -> dict[uuid.UUID, str]:
        response = await client.get("/v1/approvals", params={"status": "pending"}, headers=headers)
        assert response.status_code == 200, response.text
        return {uuid.UUID(a["run_id"]): a["id"] for a in response.json()["data"]}

    everything = await pending(wide.headers)
    assert set(everything) == {theirs.id, mine.id}
    assert await pending(hr.headers) == {mine.id: everything[mine.id]}
    # Asked by run, a hidden run is not found, as it is everywhere else (not a run without
    # approvals); its own run lists its approval.
    by_run = await client.get(
        "/v1/approvals", params={"run_id": str(theirs.id)}, headers=hr.headers
    )
    error = assert_error(by_run, 404, "not_found")
    assert error["message"] == f"run {theirs.id} not found"
    own_run = await client.get("/v1/approvals", params={"run_id": str(mine.id)}, headers=hr.headers)
    assert [a["id"] for a in own_run.json()["data"]] == [everything[mine.id]]
    seen = await client.get(
        "/v1/approvals", params={"run_id": str(theirs.id)}, headers=wide.headers
    )
    assert [a["id"] for a in seen.json()["data"]] == [everything[theirs.id]]

    hidden = f"/v1/approvals/{everything[theirs.id]}"
    for response in (
        await client.get(hidden, headers=hr.headers),
        await client.post(f"{hidden}/approve", json={}, headers=hr.headers),
        await client.post(f"{hidden}/deny", json={"reason": "no"}, headers=hr.headers),
    ):
        assert_error(response, 404, "not_found")
    assert (await client.get(hidden, headers=wide.headers)).json()["status"] == "pending"

    approved = await client.post(
        f"/v1/approvals/{everything[mine.id]}/approve", json={}, headers=hr.headers
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert (await services.runs.get(mine.id, None)).status is RunStatus.QUEUED


async def test_an_idempotency_key_held_by_a_run_the_key_may_not_see_is_a_bare_conflict(
    client: httpx.AsyncClient, services: Services, acme: TenantFixture
) -> None:
    body = {"agent": "assistant", "input": "the merger plan"}
    first = await client.post(
        "/v1/runs", json=body, headers={**bearer(acme.secret), "Idempotency-Key": "k1"}
    )
    assert first.status_code == 202, first.text
    hr = await key(services, ["hr"], Role.CLIENT)

    for attempt in (body, {"agent": "assistant", "input": "something else"}):
        refused = await client.post(
            "/v1/runs", json=attempt, headers={**hr.headers, "Idempotency-Key": "k1"}
        )
        assert_error(refused, 409, "idempotency_key_reused")
        assert first.json()["id"] not in refused.text
        assert "merger" not in refused.text
    # The key's holder replays it as before; the restricted key replays its own.
    again = await client.post(
        "/v1/runs", json=body, headers={**bearer(acme.secret), "Idempotency-Key": "k1"}
    )
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    own = {**hr.headers, "Idempotency-Key": "k2"}
    made = await client.post("/v1/runs", json=body, headers=own)
    replayed = await client.post("/v1/runs", json=body, headers=own)
    assert (made.status_code, replayed.status_code) == (202, 200)
    assert replayed.json()["id"] == made.json()["id"]
    other = await client.post("/v1/runs", json={**body, "input": "other"}, headers=own)
    error = assert_error(other, 409, "idempotency_key_reused")
    assert made.json()["id"] in error["message"]  # its own run: named, as for any key
    assert len(await services.runs.list(acme.tenant.id)) == 2
