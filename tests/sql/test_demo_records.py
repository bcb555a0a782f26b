"""The demo tenant's records: seeded idempotently by `garrison up`, readable through sql_query
and read_record as the demo tenant, and by nobody else."""

from __future__ import annotations

from pathlib import Path

from agent.runtime import Services
from agent.tools.read_record import ReadRecord, ReadRecordArgs
from agent.tools.sql_query import SqlQuery, SqlQueryArgs
from ops import demo_records
from ops.seed import DEMO_TENANT, seed_demo
from tests.conftest import TenantFixture
from tests.sql.conftest import tool_context


async def test_the_demo_records_are_seeded_once_and_read_as_the_demo_tenant(
    services: Services, tmp_path: Path, acme: TenantFixture
) -> None:
    for _ in range(2):  # every `garrison up` seeds again; nothing doubles
        await seed_demo(services, tmp_path, actor="test", load_documents=False)
    demo = await services.tenancy.require_tenant(DEMO_TENANT)
    principal = acme.principal.__class__(
        tenant_id=demo.id, key_id=acme.principal.key_id, roles=acme.principal.roles
    )
    ctx = tool_context(services, TenantFixture(demo, acme.agent, principal, ""))
    result = await SqlQuery(services.store.sql).run(
        SqlQueryArgs(
            sql="select c.name, count(o.id) from customers c left join orders o "
            "on o.customer_id = c.id group by c.name order by c.name"
        ),
        ctx,
    )
    rows = result.data["rows"]
    assert [name for name, _ in rows] == sorted(c["name"] for c in demo_records.CUSTOMERS)
    assert sum(n for _, n in rows) == len(demo_records.ORDERS)

    prefs = await ReadRecord(services.store.records).run(
        ReadRecordArgs(key=demo_records.PREFERENCES_KEY), ctx
    )
    assert (prefs.data["version"], prefs.data["owner"]) == (1, "crm")

    theirs = await SqlQuery(services.store.sql).run(
        SqlQueryArgs(sql="select count(*) from orders"), tool_context(services, acme)
    )
    assert theirs.data["rows"] == [[0]]
