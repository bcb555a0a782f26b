"""Fixtures for sql_query: two tenants with records in the demo tables, and a raw connection as a
tenant's own database role (the guard switched off: whatever SQL a test sends goes straight in)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from agent.runtime import Services
from agent.tools.base import ToolContext
from tests.conftest import TenantFixture

TABLES = ("org_data.customers", "org_data.orders", "state_records", "sql_roles", "tenants", "runs")


@dataclass(frozen=True)
class Planted:
    tenant: TenantFixture
    marker: str
    """A string only this tenant's rows contain: finding it elsewhere is a leak."""


def plant(url: str, tenant_id: uuid.UUID, marker: str, orders: int = 30) -> None:
    """Customers and orders of one tenant, written as the application (bypassing RLS)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO org_data.customers (tenant_id, id, name, country, segment, "
            "contact_email, since) VALUES (%s, 1, %s, 'CH', 'lab', %s, '2020-01-01'), "
            "(%s, 2, %s, 'DE', 'industry', NULL, '2021-06-01')",
            (tenant_id, f"{marker} Labs", f"buyer@{marker}.example", tenant_id, f"{marker} AG"),
        )
        conn.cursor().executemany(
            "INSERT INTO org_data.orders (tenant_id, id, customer_id, product, quantity, amount, "
            "status, ordered_at) VALUES (%s, %s, %s, %s, %s, %s, 'shipped', "
            "'2026-01-01'::timestamptz + %s * interval '1 day')",
            [
                (tenant_id, i, 1 + i % 2, f"{marker}-NW-{i}", 1 + i % 3, 100 + i, i)
                for i in range(1, orders + 1)
            ],
        )


@pytest.fixture
async def planted(
    services: Services, database_url: str, acme: TenantFixture, globex: TenantFixture
) -> tuple[Planted, Planted]:
    plant(database_url, acme.tenant.id, "ACMEONLY")
    plant(database_url, globex.tenant.id, "GLOBEXONLY")
    return Planted(acme, "ACMEONLY"), Planted(globex, "GLOBEXONLY")


async def tenant_connect_args(services: Services, tenant_id: uuid.UUID) -> dict[str, Any]:
    """How to log in as the tenant's role: its own credentials, none of the runner's options
    (the role's defaults alone hold it)."""
    creds = await services.store.tenant_roles.credentials(tenant_id)
    assert creds is not None, "the tenant has no role: provisioning did not run"
    _, kwargs = services.store.engine.dialect.create_connect_args(services.store.engine.url)
    kwargs.pop("context", None)
    kwargs.update(user=creds.role, password=creds.password)
    return dict(kwargs)


@pytest.fixture
async def acme_role_conn(
    services: Services, planted: tuple[Planted, Planted]
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    args = await tenant_connect_args(services, planted[0].tenant.tenant.id)
    conn = await psycopg.AsyncConnection.connect(**args, autocommit=True)
    yield conn
    await conn.close()


def counts(url: str) -> dict[str, int]:
    """Rows per table and large objects, counted as the application: before/after a case."""
    with psycopg.connect(url, autocommit=True) as conn:
        found = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        found["large_objects"] = conn.execute(
            "SELECT count(*) FROM pg_largeobject_metadata"
        ).fetchone()[0]
        found["tenant_data_relations"] = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('tenant_data', 'org_data', 'public')"
        ).fetchone()[0]
    return found


def tool_context(services: Services, fx: TenantFixture) -> ToolContext:
    return ToolContext(
        tenant_id=fx.tenant.id,
        run_id=uuid.uuid4(),
        step_number=1,
        documents=services.store.documents,
        embedder=services.models.embedder(),
    )
