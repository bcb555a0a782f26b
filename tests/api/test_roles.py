"""Roles on API keys: every operation the API serves needs the role `agent.api.roles` names, a
key without it is refused with 403 `forbidden`, and no route can escape the table.

Operations are enumerated from the served OpenAPI document, so a route added later is covered
(or fails here) without this file changing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from agent.api.access import apply_role_table
from agent.api.deps import PrincipalDep
from agent.api.roles import PUBLIC_ROUTES, ROUTE_ROLES
from agent.domain import Principal, Role
from agent.roles import IMPLIED, holds
from agent.runtime import Services, Settings
from tests.api.conftest import Serve, assert_error, bearer
from tests.api.operations import call, served_operations
from tests.conftest import TenantFixture


async def key_with(services: Services, tenant: TenantFixture, *roles: Role) -> str:
    name = "+".join(roles)
    _key, secret = await services.keys.create(tenant.tenant.name, name, roles, actor="test")
    return secret


async def test_the_table_covers_exactly_the_served_operations(client: httpx.AsyncClient) -> None:
    ops = await served_operations(client)
    served = {op.key for op in ops}
    assert served - set(ROUTE_ROLES) - PUBLIC_ROUTES == set(), "served without a role"
    assert set(ROUTE_ROLES) - served == set(), "a role for a route nobody serves"
    assert served >= PUBLIC_ROUTES
    for op in ops:
        if op.public:
            assert op.role is None, op
            continue
        # The document states the table's role, and that a key without it gets 403.
        assert op.role == ROUTE_ROLES[op.key], op
        assert {"401", "403"} <= op.responses, f"{op} does not document 401 and 403"


def test_admin_holds_every_role_and_approving_is_kept_apart() -> None:
    assert all(holds([Role.ADMIN], role) for role in Role)
    assert holds([Role.OPERATOR], Role.CLIENT)
    assert not holds([Role.OPERATOR], Role.APPROVER)
    assert not holds([Role.CLIENT], Role.APPROVER)
    assert not holds([Role.APPROVER], Role.CLIENT)
    assert not holds([], Role.CLIENT)
    assert set(IMPLIED) == set(Role)


async def test_every_operation_checks_its_role(
    client: httpx.AsyncClient, services: Services, acme: TenantFixture
) -> None:
    keys = {role: await key_with(services, acme, role) for role in Role}
    checked = 0
    for op in await served_operations(client):
        if op.public:
            continue
        assert op.role is not None
        anonymous = await call(client, op, {})
        assert_error(anonymous, 401, "unauthorized")
        for held, secret in keys.items():
            response = await call(client, op, bearer(secret))
            if holds([held], op.role):
                assert response.status_code not in (401, 403), (str(op), held, response.text)
            else:
                error = assert_error(response, 403, "forbidden")
                assert f"lacks the {op.role} role" in error["message"], (str(op), held)
                assert f"its roles: {held}" in error["message"]
            checked += 1
    assert checked >= len(ROUTE_ROLES) * len(Role)


async def test_a_key_holds_the_union_of_its_roles(
    client: httpx.AsyncClient, services: Services, acme: TenantFixture
) -> None:
    both = await key_with(services, acme, Role.CLIENT, Role.APPROVER)
    listed = await client.get("/v1/runs", headers=bearer(both))
    assert listed.status_code == 200, listed.text
    refused = await client.delete(
        "/v1/documents/00000000-0000-4000-8000-000000000000", headers=bearer(both)
    )
    error = assert_error(refused, 403, "forbidden")
    assert "its roles: approver, client" in error["message"]


async def test_the_role_is_checked_before_the_object_is_looked_up(
    client: httpx.AsyncClient, services: Services, acme: TenantFixture
) -> None:
    # A client key learns nothing about which runs exist from an operation it may not use:
    # an existing run and a made-up id answer the same 403.
    run = await services.runs.submit(acme.principal, "assistant", "hello")
    client_key = await key_with(services, acme, Role.CLIENT)
    for run_id in (str(run.id), "00000000-0000-4000-8000-000000000000", "not-a-uuid"):
        response = await client.post(f"/v1/runs/{run_id}/cancel", headers=bearer(client_key))
        assert_error(response, 403, "forbidden")
    assert (await services.runs.get(run.id, None)).status == "queued"


async def test_an_operators_changes_are_audited_under_its_key(
    client: httpx.AsyncClient, services: Services, acme: TenantFixture
) -> None:
    secret = await key_with(services, acme, Role.OPERATOR)
    operator = await services.keys.authenticate(secret)
    run = await services.runs.submit(acme.principal, "assistant", "hello")
    forked = await client.post(
        f"/v1/runs/{run.id}/fork", json={"from_step": 0}, headers=bearer(secret)
    )
    assert forked.status_code == 202, forked.text
    cancelled = await client.post(f"/v1/runs/{run.id}/cancel", headers=bearer(secret))
    assert cancelled.status_code == 200, cancelled.text

    entries = await services.store.audit.list_entries(acme.tenant.id, 10)
    mine = [(e.action, e.object_id) for e in reversed(entries) if e.actor == operator.actor]
    assert mine == [("run.fork", forked.json()["id"]), ("run.cancel", str(run.id))]
    assert operator.actor == f"key:{operator.key_id}"


async def test_a_route_missing_from_the_table_fails_closed(
    serve: Serve, settings: Settings, database_url: str, acme: TenantFixture
) -> None:
    def add_unlisted(app: FastAPI) -> None:
        # Added after create_app checked its routes: only the per-request check stands guard.
        @app.get("/v1/unlisted")
        async def unlisted(principal: PrincipalDep) -> dict[str, str]:
            return {"tenant": str(principal.tenant_id)}

    base = serve(settings, database_url, customize=add_unlisted)
    async with httpx.AsyncClient(base_url=base, timeout=10, trust_env=False) as http:
        for headers in ({}, bearer(acme.secret)):  # acme's fixture key is an admin
            response = await http.get("/v1/unlisted", headers=headers)
            assert_error(response, 500, "internal_error")
            assert "tenant" not in response.text


def _app_with(route: Callable[[APIRouter], None]) -> FastAPI:
    app = FastAPI()
    router = APIRouter()
    route(router)
    app.include_router(router)
    return app


def test_an_app_with_a_route_outside_the_table_is_refused() -> None:
    def unlisted(router: APIRouter) -> None:
        @router.post("/v1/runs/{run_id}/escalate")
        async def escalate(principal: PrincipalDep) -> None:
            del principal

    with pytest.raises(RuntimeError, match=r"POST /v1/runs/\{run_id\}/escalate has no row"):
        apply_role_table(_app_with(unlisted))


def test_an_app_whose_listed_route_never_checks_a_key_is_refused() -> None:
    def unchecked(router: APIRouter) -> None:
        @router.get("/v1/models")
        async def models() -> list[str]:
            return []

    with pytest.raises(RuntimeError, match="GET /v1/models has a role but never checks a key"):
        apply_role_table(_app_with(unchecked))


def test_the_table_documents_each_role_in_openapi() -> None:
    def listed(router: APIRouter) -> None:
        @router.get("/v1/models", description="The deployments.")
        async def models(principal: PrincipalDep) -> list[str]:
            del principal
            return []

    app = _app_with(listed)
    apply_role_table(app)
    operation = app.openapi()["paths"]["/v1/models"]["get"]
    assert operation["x-required-role"] == "admin"
    assert operation["description"].startswith("The deployments.\n\nNeeds the `admin` role")


def test_principals_name_their_key_as_actor() -> None:
    key_id = uuid.UUID("12345678-1234-4234-8234-123456789abc")
    principal = Principal(tenant_id=uuid.uuid4(), key_id=key_id, roles=(Role.CLIENT,))
    assert principal.actor == "key:12345678-1234-4234-8234-123456789abc"
