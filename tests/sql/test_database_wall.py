"""The second wall alone: with the guard switched off, the tenant's database role allows no write
and no other tenant's row, whatever SQL it is sent.

Each escape of the corpus is sent raw (simple protocol, several statements allowed) on a fresh
connection logged in as the tenant's role, with nothing but the role's own defaults; then again
through the runner without the guard. Either Postgres refuses it or it has no effect: row counts
of every table (the other tenant's data included), large objects and relations are the same
before and after, and nothing returned carries the other tenant's marker.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from agent.ports import SqlFailure, SqlLimits, SqlRows
from agent.runtime import Services
from datastore.tenant_roles import role_name
from tests.sql.conftest import Planted, counts, tenant_connect_args
from tests.sql.corpus import ESCAPES, Escape

RUN_WITHOUT_EFFECT = (
    # Session-local settings, a no-op RESET ROLE, a comment, short sleeps and a lock released
    # with the session: nothing outlives the connection.
    "advisory_lock",
    "comment_only",
    "pg_sleep",
    "pg_sleep_qualified",
    "read_only_off",
    "reset_role",
    "search_path",
    "set_config_read_only",
    "set_config_tenant",
    "statement_timeout",
    "statement_timeout_then_sleep",
    "transaction_read_write",
    # Reads the role may make: its own name and settings, its own rows (through the views),
    # and catalog metadata that Postgres shows every role (names, never rows of other tenants;
    # the guard refuses all of these).
    "cte_shadowing_catalog",
    "current_setting",
    "current_user",
    "information_schema",
    "stat_activity",
    "union_catalog_qualified",
    # A notification is not a write; its listener only re-reads the run events table.
    "notify",
)
LIMITS = SqlLimits(timeout_s=5.0, max_rows=1000, max_bytes=1_000_000)


def fill(escape: Escape, other: uuid.UUID) -> str:
    return escape.sql.format(other=role_name(other), other_id=other)


async def raw(services: Services, tenant_id: uuid.UUID, sql: str) -> tuple[list[Any], str | None]:
    """Every value of every result set the statements produced, and the error if one stopped
    them (the statements before it ran; the role's read-only default still held them)."""
    args = await tenant_connect_args(services, tenant_id)
    values: list[Any] = []
    async with await psycopg.AsyncConnection.connect(**args, autocommit=True) as conn:
        try:
            cur = await conn.execute(sql.encode())  # bytes: no client-side parameter parsing
            while True:
                if cur.description is not None:
                    values += [v for row in await cur.fetchall() for v in row]
                if not cur.nextset():
                    break
        except psycopg.Error as exc:
            return values, f"{type(exc).__name__}: {exc}"
    return values, None


def leaked(values: list[Any], marker: str) -> list[Any]:
    return [v for v in values if marker in str(v)]


async def test_the_role_alone_allows_no_write_and_no_foreign_row(
    services: Services, database_url: str, planted: tuple[Planted, Planted]
) -> None:
    # One test over the whole corpus (a database per case would cost minutes); every case is
    # checked and every failure named.
    mine, theirs = planted
    failures: list[str] = []
    ran: list[str] = []
    for escape in ESCAPES:
        sql = fill(escape, theirs.tenant.tenant.id)
        before = counts(database_url)
        values, error = await raw(services, mine.tenant.tenant.id, sql)
        if error is None:
            ran.append(escape.name)
        if leaked(values, theirs.marker):
            failures.append(f"{escape.name}: raw SQL returned the other tenant's rows")
        if counts(database_url) != before:
            changed = diff(before, counts(database_url))
            failures.append(f"{escape.name}: raw SQL changed {changed}")
        before = counts(database_url)
        outcome = await services.store.sql.run(mine.tenant.tenant.id, sql, LIMITS)
        if isinstance(outcome, SqlRows) and leaked(
            [v for row in outcome.rows for v in row], theirs.marker
        ):
            failures.append(f"{escape.name}: the runner returned the other tenant's rows")
        if counts(database_url) != before:
            failures.append(
                f"{escape.name}: the runner changed {diff(before, counts(database_url))}"
            )
    assert failures == []
    # Postgres refuses the others outright; these ran, and changed nothing (checked above).
    assert sorted(ran) == sorted(RUN_WITHOUT_EFFECT)


def diff(before: dict[str, int], after: dict[str, int]) -> dict[str, tuple[int, int]]:
    return {k: (before[k], after[k]) for k in before if before[k] != after[k]}


async def test_the_views_show_each_tenant_only_its_own_rows(
    services: Services, planted: tuple[Planted, Planted]
) -> None:
    for fx, other in (planted, planted[::-1]):
        outcome = await services.store.sql.run(
            fx.tenant.tenant.id,
            "SELECT o.product, c.name FROM tenant_data.orders o "
            "JOIN tenant_data.customers c ON c.id = o.customer_id",
            LIMITS,
        )
        assert isinstance(outcome, SqlRows), outcome
        assert len(outcome.rows) == 30
        assert all(fx.marker in p and fx.marker in n for p, n in outcome.rows)
        assert leaked([v for r in outcome.rows for v in r], other.marker) == []


async def test_base_tables_and_application_tables_are_refused_to_the_role(
    services: Services, planted: tuple[Planted, Planted]
) -> None:
    tenant_id = planted[0].tenant.tenant.id
    for sql in (
        "SELECT * FROM org_data.orders",
        "SELECT password FROM public.sql_roles",
        "SELECT * FROM public.state_records",
        "SELECT * FROM public.steps",
        "SELECT * FROM pg_authid",
    ):
        values, error = await raw(services, tenant_id, sql)
        assert values == [], sql
        assert error is not None
        assert "InsufficientPrivilege" in error, sql


async def test_a_role_that_altered_its_own_defaults_gains_nothing_through_the_runner(
    services: Services, database_url: str, planted: tuple[Planted, Planted]
) -> None:
    """Postgres lets every role change its own defaults (and password). The runner's connection
    options override the defaults, and provisioning again puts them back."""
    tenant_id = planted[0].tenant.tenant.id
    args = await tenant_connect_args(services, tenant_id)
    async with await psycopg.AsyncConnection.connect(**args, autocommit=True) as conn:
        await conn.execute("SET default_transaction_read_only = off")
        await conn.execute("ALTER ROLE CURRENT_USER SET default_transaction_read_only = off")
        await conn.execute("ALTER ROLE CURRENT_USER SET statement_timeout = 0")
    outcome = await services.store.sql.run(
        tenant_id,
        "SELECT current_setting('default_transaction_read_only'), "
        "current_setting('transaction_read_only'), current_setting('statement_timeout')",
        SqlLimits(timeout_s=2.0, max_rows=10, max_bytes=10_000),
    )
    assert isinstance(outcome, SqlRows), outcome
    assert outcome.rows == [["on", "on", "3s"]]

    await services.store.tenant_roles.provision(tenant_id)
    with psycopg.connect(database_url) as conn:
        [config] = conn.execute(
            "SELECT rolconfig FROM pg_roles WHERE rolname = %s", (role_name(tenant_id),)
        ).fetchone() or [None]
    assert "default_transaction_read_only=on" in config
    assert "statement_timeout=30s" in config


async def test_a_dropped_role_is_provisioned_again_on_the_next_query(
    services: Services, database_url: str, planted: tuple[Planted, Planted]
) -> None:
    tenant_id = planted[0].tenant.tenant.id
    name = role_name(tenant_id)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP OWNED BY "{name}"')
        conn.execute(f'DROP ROLE "{name}"')
    outcome = await services.store.sql.run(
        tenant_id, "SELECT count(*) FROM tenant_data.orders", LIMITS
    )
    assert isinstance(outcome, SqlRows), outcome
    assert outcome.rows == [[30]]


async def test_several_statements_never_reach_the_server_through_the_runner(
    services: Services, database_url: str, planted: tuple[Planted, Planted]
) -> None:
    before = counts(database_url)
    outcome = await services.store.sql.run(
        planted[0].tenant.tenant.id,
        "SELECT 1; SET default_transaction_read_only = off; SELECT lo_create(0)",
        LIMITS,
    )
    assert isinstance(outcome, SqlFailure)
    assert outcome.code == "sql_error"
    assert "multiple commands" in outcome.message
    assert counts(database_url) == before
