"""`sql_query` end to end: the tenant's rows, caps on rows and bytes, a deadline that cancels the
query on the server, and stable codes for every refusal, through the tool and through a run."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import psycopg
import pytest

from agent.domain import RunStatus
from agent.runtime import Services, Settings
from agent.tools.sql_query import SqlQuery, SqlQueryArgs
from serving.testing.scripted import ScriptedModelServer
from tests.sql.conftest import Planted, tool_context


async def test_the_tool_returns_the_tenants_rows_and_the_sql_that_ran(
    services: Services, planted: tuple[Planted, Planted]
) -> None:
    mine, _ = planted
    tool = SqlQuery(services.store.sql)
    result = await tool.run(
        SqlQueryArgs(
            sql="select c.name, count(*) n, sum(o.amount) total, "
            "fiscal_quarter(min(o.ordered_at)::date) q from orders o "
            "join customers c on c.id = o.customer_id group by c.name order by c.name"
        ),
        tool_context(services, mine.tenant),
    )
    data = result.data
    assert data["columns"] == ["name", "n", "total", "q"]
    assert data["rows"] == [
        ["ACMEONLY AG", 15, sum(100 + i for i in range(1, 31) if i % 2 == 1) + 0.0, "FY2026-Q1"],
        ["ACMEONLY Labs", 15, sum(100 + i for i in range(1, 31) if i % 2 == 0) + 0.0, "FY2026-Q1"],
    ]
    assert data["sql"].startswith("SELECT c.name, count(*) AS n")
    assert "FROM tenant_data.orders AS o INNER JOIN tenant_data.customers AS c" in data["sql"]
    assert data["views"] == ["orders", "customers"]
    assert (data["row_count"], data["truncated"], data["truncated_by"]) == (2, False, None)


async def test_rows_and_bytes_are_capped_and_the_cut_is_reported(
    services: Services, planted: tuple[Planted, Planted]
) -> None:
    ctx = tool_context(services, planted[0].tenant)
    by_rows = await SqlQuery(services.store.sql).run(
        SqlQueryArgs(sql="select id, product from orders order by id", max_rows=5), ctx
    )
    assert [r[0] for r in by_rows.data["rows"]] == [1, 2, 3, 4, 5]
    assert (by_rows.data["truncated"], by_rows.data["truncated_by"]) == (True, "rows")

    small = SqlQuery(services.store.sql, max_bytes=300)
    by_bytes = await small.run(SqlQueryArgs(sql="select * from orders order by id"), ctx)
    rows = by_bytes.data["rows"]
    assert 0 < len(rows) < 30
    assert len(str(rows).encode()) < 400
    assert (by_bytes.data["truncated"], by_bytes.data["truncated_by"]) == (True, "bytes")

    exact = await SqlQuery(services.store.sql).run(
        SqlQueryArgs(sql="select id from orders", max_rows=30), ctx
    )
    assert (exact.data["row_count"], exact.data["truncated"]) == (30, False)


async def test_a_slow_query_ends_at_the_deadline_and_is_cancelled_on_the_server(
    services: Services, database_url: str, planted: tuple[Planted, Planted]
) -> None:
    tool = SqlQuery(services.store.sql, timeout_s=0.5)
    started = time.monotonic()
    result = await tool.run(
        # 30^6 rows of a cross join: seconds of CPU, no temporary files (a generate_series this
        # big would hit the role's temp_file_limit first, an sql_error).
        SqlQueryArgs(
            sql="select count(*) from orders a, orders b, orders c, orders d, orders e, orders f"
        ),
        tool_context(services, planted[0].tenant),
    )
    took = time.monotonic() - started
    assert result.data["error"]["code"] == "sql_timeout", result.data
    assert "0.5 s" in result.data["error"]["message"]
    assert took < 3.0
    # Nothing of it keeps running: the backend was cancelled and its connection closed.
    deadline = time.monotonic() + 5
    while True:
        with psycopg.connect(database_url) as conn:
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'garrison-sql'"
            ).fetchone()
        if busy == (0,):
            break
        assert time.monotonic() < deadline, "the cancelled query is still on the server"
        await asyncio.sleep(0.1)


async def test_every_refusal_is_a_stable_code_on_the_result(
    services: Services, database_url: str, planted: tuple[Planted, Planted]
) -> None:
    ctx = tool_context(services, planted[0].tenant)
    tool = SqlQuery(services.store.sql)
    rejected = await tool.run(SqlQueryArgs(sql="select 1; delete from orders"), ctx)
    assert rejected.data == {
        "error": {
            "code": "sql_rejected",
            "reason": "multiple_statements",
            "message": "send exactly one statement",
        }
    }
    unknown = await tool.run(SqlQueryArgs(sql="select contact_email from customers"), ctx)
    assert unknown.data["error"]["code"] == "sql_error"
    assert "contact_email" in unknown.data["error"]["message"]
    assert unknown.data["sql"] == "SELECT contact_email FROM tenant_data.customers"
    listing = await tool.run(SqlQueryArgs(sql="select * from invoices"), ctx)
    assert listing.data["error"]["reason"] == "relation_not_allowed"
    assert "customers, orders" in listing.data["error"]["message"]

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM sql_roles WHERE tenant_id = %s", (planted[1].tenant.tenant.id,))
    missing = await tool.run(
        SqlQueryArgs(sql="select 1"), tool_context(services, planted[1].tenant)
    )
    assert missing.data["error"]["code"] == "sql_not_configured"


async def test_an_agent_queries_its_records_in_a_run(
    services: Services, planted: tuple[Planted, Planted], scripted_model: ScriptedModelServer
) -> None:
    mine, _ = planted
    await services.tenancy.put_agent(
        mine.tenant.tenant.name,
        "analyst",
        instructions="Answer from the records.",
        tools=["sql_query", "finish"],
        retrieval_k=0,
        actor="test",
    )
    scripted_model.enqueue(
        {"tool": "sql_query", "arguments": {"sql": "select count(*) from orders"}}
    )
    scripted_model.enqueue(
        {"tool": "sql_query", "arguments": {"sql": "select * from org_data.orders"}}
    )
    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": "30 orders"}})
    run = await services.runs.submit(mine.tenant.principal, "analyst", "how many orders?")
    assert await services.worker().run_until_idle() == 1
    done = await services.runs.get(run.id, mine.tenant.tenant.id)
    assert done.status == RunStatus.SUCCEEDED
    first, second, _ = await services.runs.steps(run.id, mine.tenant.tenant.id)
    assert first.tool == "sql_query"
    assert first.result is not None
    assert first.result["rows"] == [[30]]
    assert second.result is not None
    assert second.result["error"]["reason"] == "schema_not_allowed"


async def test_the_operator_sets_the_caps_and_the_model_cannot_ask_past_them(
    services: Services, planted: tuple[Planted, Planted], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GARRISON_SQL_MAX_ROWS", "4")
    monkeypatch.setenv("GARRISON_SQL_TIMEOUT_S", "0.5")
    configured = replace(services, settings=Settings())  # read from the environment
    governance = configured.settings.governance
    assert (governance.sql_max_rows, governance.sql_timeout_s) == (4, 0.5)
    tool = configured.tools()["sql_query"]
    ctx = tool_context(services, planted[0].tenant)
    asked_many = await tool.run(SqlQueryArgs(sql="select id from orders", max_rows=30), ctx)
    assert (asked_many.data["row_count"], asked_many.data["truncated_by"]) == (4, "rows")
    started = time.monotonic()
    slow = await tool.run(
        SqlQueryArgs(
            sql="select count(*) from orders a, orders b, orders c, orders d, orders e, orders f"
        ),
        ctx,
    )
    assert slow.data["error"]["code"] == "sql_timeout"
    assert time.monotonic() - started < 3
