"""What a tenant's database role is: provisioned with the tenant (and by the migration for
tenants that existed before it), able to log in and read the allow-listed views, nothing more."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from agent.runtime import Services
from datastore import migrate
from datastore.tenant_roles import VIEWS_OWNER, role_name
from tests.conftest import PgCluster, TenantFixture, create_database, drop_database


def one(url: str, sql: str, *params: object) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


async def test_a_new_tenant_gets_a_login_role_that_can_do_nothing_but_read_views(
    services: Services, database_url: str, acme: TenantFixture
) -> None:
    name = role_name(acme.tenant.id)
    with psycopg.connect(database_url) as conn:
        role = conn.execute(
            "SELECT rolcanlogin, rolinherit, rolsuper, rolcreaterole, rolcreatedb, "
            "rolreplication, rolbypassrls, rolconnlimit, rolconfig FROM pg_roles "
            "WHERE rolname = %s",
            (name,),
        ).fetchone()
        assert role is not None
        login, inherit, superuser, createrole, createdb, replication, bypass, limit, config = role
        assert (login, inherit) == (True, False)
        assert [superuser, createrole, createdb, replication, bypass] == [False] * 5
        assert limit == 4
        assert "default_transaction_read_only=on" in config
        assert "statement_timeout=30s" in config
        assert "search_path=tenant_data" in config
        # Member of nothing, and nobody is a member of it.
        assert conn.execute(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid IN (m.member, "
            "m.roleid) WHERE r.rolname = %s",
            (name,),
        ).fetchone() == (0,)
        # Owns nothing in this database.
        assert conn.execute(
            "SELECT count(*) FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid "
            "WHERE r.rolname = %s AND d.deptype = 'o'",
            (name,),
        ).fetchone() == (0,)
        # No CREATE on any schema, no TEMP on the database.
        creatable = conn.execute(
            "SELECT array_agg(nspname) FROM pg_namespace "
            "WHERE has_schema_privilege(%s, oid, 'CREATE')",
            (name,),
        ).fetchone()
        assert creatable == (None,)
        assert conn.execute(
            "SELECT has_database_privilege(%s, current_database(), 'TEMP'), "
            "has_database_privilege(%s, current_database(), 'CREATE')",
            (name, name),
        ).fetchone() == (False, False)
        # SELECT on the views, nothing on the base tables or the application's tables.
        readable = conn.execute(
            "SELECT array_agg(n.nspname || '.' || c.relname ORDER BY 1) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'v', 'm') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND has_table_privilege(%s, c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE')",
            (name,),
        ).fetchone()
        assert readable == (["tenant_data.customers", "tenant_data.orders"],)
        writable = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND "
            "has_table_privilege(%s, c.oid, 'INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')",
            (name,),
        ).fetchone()
        assert writable == (0,)


async def test_base_tables_force_row_level_security_and_views_are_owned_by_a_plain_role(
    database_url: str,
) -> None:
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'org_data' AND c.relkind = 'r' ORDER BY 1"
        ).fetchall()
        assert tables == [("customers", True, True), ("orders", True, True)]
        owners = conn.execute(
            "SELECT DISTINCT r.rolname, r.rolsuper, r.rolbypassrls, r.rolcanlogin FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles r ON r.oid = c.relowner "
            "WHERE n.nspname = 'tenant_data' AND c.relkind = 'v'"
        ).fetchall()
        assert owners == [(VIEWS_OWNER, False, False, False)]
        # Large objects, the one row any role could create, are closed to PUBLIC.
        assert conn.execute(
            "SELECT has_function_privilege('public', 'lo_create(oid)', 'EXECUTE') "
            "OR has_function_privilege('public', 'lo_from_bytea(oid, bytea)', 'EXECUTE')"
        ).fetchone() == (False,)


async def test_the_catalog_lists_the_views_and_functions_of_the_allow_listed_schema(
    services: Services,
) -> None:
    catalog = await services.store.sql.catalog()
    assert catalog.schema == "tenant_data"
    assert dict(catalog.views) == {
        "customers": ("id", "name", "country", "segment", "since"),
        "orders": (
            "id",
            "customer_id",
            "product",
            "quantity",
            "amount",
            "currency",
            "status",
            "ordered_at",
        ),
    }
    assert catalog.functions == frozenset({"fiscal_quarter"})


@pytest.fixture
def pre_0008_url(pg_cluster: PgCluster) -> Iterator[str]:
    name = create_database(pg_cluster, migrated=False)
    yield pg_cluster.url_for(name)
    drop_database(pg_cluster, name)


def test_the_migration_provisions_tenants_that_existed_before_it(pre_0008_url: str) -> None:
    migrate.upgrade(pre_0008_url, "0007")
    with psycopg.connect(pre_0008_url, autocommit=True) as conn:
        tenant_id = conn.execute(
            "INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 'old') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
    migrate.upgrade(pre_0008_url)
    assert one(pre_0008_url, "SELECT role_name FROM sql_roles WHERE tenant_id = %s", tenant_id) == (
        role_name(tenant_id)
    )
    assert (
        one(
            pre_0008_url,
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s",
            role_name(tenant_id),
        )
        is True
    )
    # Down and up again: the roles go with the migration and come back with it.
    migrate.downgrade(pre_0008_url, "0007")
    assert (
        one(pre_0008_url, "SELECT count(*) FROM pg_roles WHERE rolname = %s", role_name(tenant_id))
        == 0
    )
    migrate.upgrade(pre_0008_url)
    assert (
        one(pre_0008_url, "SELECT count(*) FROM pg_roles WHERE rolname = %s", role_name(tenant_id))
        == 1
    )
