"""Every executed state change is audited exactly once, on real Postgres: an allowed
`write_record` (a state change with no outbox row) gets the entry the live path and the sweep
both build, naming the key that submitted the run; read-only calls stay unaudited; steps a fork
copied are its parent's; and steps taken before migration 0012 are backfilled by the sweep."""

from __future__ import annotations

import importlib.util
import json
import uuid
from datetime import datetime
from pathlib import Path

import psycopg

from agent.domain import JSON, Run, RunStatus
from agent.outbox.settings import OutboxSettings
from agent.ports import RecordStore
from agent.ports.governance import STATE_CHANGING_TOOLS
from agent.ports.records import RecordRead, StateRecord
from agent.runtime import Services
from agent.tools import TOOL_NAMES, ToolContext, build_tools
from datastore import migrate
from datastore.repos.audit_sweep import GOVERNED
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture
from tests.policy.audit_trail import appended_with, lose_step_appends, step_entries, sweeper
from tests.policy.conftest import apply, drive
from tests.policy.policies import DENY_HTTP

PREFS = "customer:1042:preferences"
READ = {"tool": "read_record", "arguments": {"key": PREFS}}
WRITE = {
    "tool": "write_record",
    "arguments": {
        "key": PREFS,
        "type": "customer_preferences",
        "data": {"contact_channel": "email", "language": "en"},
    },
}
FINISH = {"tool": "finish", "arguments": {"answer": "done"}}
MIGRATION = Path(__file__).parents[2] / "datastore/migrations/versions/0012_audit_state_changes.py"
HOOKS = "hooks.internal"
RUN_ONCE: dict[str, JSON] = {
    "search_documents": {"query": "preferences"},
    "finish": {"answer": "done"},
    "send_email": {"to": ["ops@example.com"], "subject": "hello", "body": "hi"},
    "http_request": {"method": "POST", "url": f"https://{HOOKS}/cases", "body": "{}"},
    "sql_query": {"sql": "select count(*) from orders"},
    "read_record": {"key": PREFS},
    "write_record": WRITE["arguments"],
}
"""Arguments each tool runs with, accepted: a new tool must say how it runs to be classified."""


class CountedWrites:
    """The real record store, counting the writes that went through."""

    def __init__(self, inner: RecordStore) -> None:
        self._inner = inner
        self.writes = 0

    async def read(self, tenant_id: uuid.UUID, key: str, run_id: uuid.UUID) -> RecordRead:
        return await self._inner.read(tenant_id, key, run_id)

    async def get(self, tenant_id: uuid.UUID, key: str) -> StateRecord | None:
        return await self._inner.get(tenant_id, key)

    async def write(
        self,
        tenant_id: uuid.UUID,
        key: str,
        *,
        type: str,
        owner: str,
        data: JSON,
        valid_until: datetime | None,
        expected_version: int,
    ) -> StateRecord | None:
        written = await self._inner.write(
            tenant_id, key, type=type, owner=owner, data=data,
            valid_until=valid_until, expected_version=expected_version,
        )  # fmt: skip
        self.writes += written is not None
        return written


async def keeper_run(
    services: Services, fx: TenantFixture, model: ScriptedModelServer, answers: list[JSON]
) -> Run:
    """A run of an agent that reads and writes state records, submitted with the tenant's key."""
    await services.tenancy.put_agent(
        fx.tenant.name, "keeper", instructions="Keep customer records up to date.",
        tools=["read_record", "write_record", "finish"], retrieval_k=0, actor="test",
    )  # fmt: skip
    for answer in answers:
        model.enqueue(answer)
    run = await services.runs.submit(fx.principal, "keeper", "update the preferences")
    done = await drive(services, run)
    assert done.status is RunStatus.SUCCEEDED, (done.failure_code, done.failure_detail)
    return done


async def test_an_allowed_write_has_one_entry_linking_key_step_output_and_verdict(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await apply(services, "acme", DENY_HTTP)
    run = await keeper_run(services, acme, scripted_model, [READ, WRITE, FINISH])
    assert run.api_key_id == acme.principal.key_id
    read, write, finish = await services.runs.steps(run.id, acme.tenant.id)
    assert write.result is not None
    assert write.result["written"] is True
    assert [s.decision["policy"]["verdict"] for s in (read, write, finish)] == ["allow"] * 3

    # The write alone: the read and the finish are read-only calls under no rule.
    entries = await step_entries(services)
    assert list(entries) == [f"{run.id}:2"]
    [entry] = entries[f"{run.id}:2"]
    assert (entry.tenant_id, entry.actor, entry.action) == (
        acme.tenant.id,
        f"run:{run.id}",
        "action.execute",
    )
    detail = entry.detail
    assert detail["api_key_id"] == str(acme.principal.key_id)
    assert (detail["tool"], detail["arguments"]) == ("write_record", write.arguments)
    assert detail["model_output"] == write.decision["attempts"][-1]["raw"]
    assert json.loads(detail["model_output"]) == WRITE
    assert detail["policy"] == {
        "verdict": "allow",
        "rule": None,
        "reason": None,
        "version": {"tenant": 1, "agent": None},
    }
    assert (detail["approval"], detail["effects"]) == (None, [])

    # Exactly once: the live path again and a sweep write nothing, and the chain holds.
    await services.governance.audit_step(run, write, [])
    assert await sweeper(services).sweep() == 0
    assert (await step_entries(services))[f"{run.id}:2"] == [entry]
    assert (await services.audit_sweep.missing(sample=5)).count == 0
    assert (await services.audit.verify()).ok


async def test_a_lost_write_entry_is_swept_with_what_the_live_path_would_write(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    lost = lose_step_appends(services)
    run = await keeper_run(services, acme, scripted_model, [WRITE, FINISH])  # and no policy
    [asked] = lost.asked
    assert asked["object_id"] == f"{run.id}:1"
    assert asked["detail"]["api_key_id"] == str(acme.principal.key_id)
    assert asked["detail"]["policy"] is None

    missing = await services.audit_sweep.missing(sample=5)
    assert [(m.run_id, m.number) for m in missing.first] == [(run.id, 1)]
    assert await sweeper(services).sweep() == 1
    [entry] = (await step_entries(services))[f"{run.id}:1"]
    assert appended_with(entry) == asked
    assert (await services.audit.verify()).ok


async def test_steps_a_fork_copied_stay_audited_under_their_parent_only(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    parent = await keeper_run(services, acme, scripted_model, [WRITE, FINISH])
    fork = await services.forks.fork(parent.id, acme.tenant.id, from_step=1, actor="test")
    assert (await services.audit_sweep.missing(sample=5)).count == 0
    scripted_model.enqueue(FINISH)
    assert (await drive(services, fork)).status is RunStatus.SUCCEEDED
    assert await sweeper(services).sweep() == 0
    assert list(await step_entries(services)) == [f"{parent.id}:1"]


async def test_steps_taken_before_0012_are_backfilled_by_the_sweep(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    database_url: str,
) -> None:
    # A write taken under the old rule, which did not audit it, and a sweep that moved past it.
    lose_step_appends(services)
    run = await keeper_run(services, acme, scripted_model, [WRITE, FINISH])
    await services.store.engine.dispose()  # let the migration take its locks
    migrate.downgrade(database_url, "0011")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE audit_sweep SET through = (SELECT max(id) FROM steps),"
            " mark_id = (SELECT max(id) FROM steps)"
        )
    assert await sweeper(services).sweep() == 0

    migrate.upgrade(database_url)
    assert await sweeper(services).sweep() == 1
    [entry] = (await step_entries(services))[f"{run.id}:1"]
    assert entry.detail["api_key_id"] == str(acme.principal.key_id)
    assert (await services.audit_sweep.missing(sample=5)).count == 0


def test_an_index_a_failed_0012_left_invalid_is_built_again(database_url: str) -> None:
    """0012 builds its index CONCURRENTLY, outside the revision's transaction: a build that
    failed leaves an INVALID index under the name and 0012 pending, and the retry replaces it."""
    migrate.downgrade(database_url, "0011")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP INDEX ix_steps_governed")
        conn.execute(f"CREATE INDEX ix_steps_governed ON steps (id) WHERE {GOVERNED}")
        # What an interrupted CREATE INDEX CONCURRENTLY leaves: an index the planner ignores.
        conn.execute(
            "UPDATE pg_index SET indisvalid = false"
            " WHERE indexrelid = 'ix_steps_governed'::regclass"
        )
    assert migrate.upgrade(database_url).up_to_date
    with psycopg.connect(database_url) as conn:
        index = conn.execute(
            "SELECT indisvalid, pg_get_expr(indpred, indrelid) FROM pg_index"
            " WHERE indexrelid = 'ix_steps_governed'::regclass"
        ).fetchone()
    assert index is not None
    valid, predicate = index
    assert valid
    assert "write_record" in predicate


async def test_the_tools_whose_run_changes_state_are_the_state_changing_tools(
    services: Services, acme: TenantFixture
) -> None:
    """`STATE_CHANGING_TOOLS` is the one list of them: every tool of the registry runs once,
    configured and accepted, and those whose run queued a side effect (an outbox row) or wrote
    a record must be exactly the listed ones."""
    records = CountedWrites(services.store.records)
    outbox = OutboxSettings(
        smtp_host="127.0.0.1", smtp_from="agent@example.org", http_allow_hosts=[HOOKS]
    )
    tools = build_tools(outbox, sql=services.store.sql, records=records)
    assert set(tools) == set(RUN_ONCE) == TOOL_NAMES
    ctx = ToolContext(
        tenant_id=acme.tenant.id,
        run_id=uuid.uuid4(),
        step_number=1,
        documents=services.store.documents,
        embedder=services.models.embedder(),
    )
    changed = set()
    for name, tool in tools.items():
        before = records.writes
        result = await tool.run(tool.validate(RUN_ONCE[name]), ctx)
        assert "error" not in result.data, (name, result.data)  # it ran, it was not refused
        if result.effects or records.writes > before:
            changed.add(name)
    assert changed == STATE_CHANGING_TOOLS


def test_the_migrated_index_predicate_is_the_sweeps_rule() -> None:
    spec = importlib.util.spec_from_file_location("migration_0012", MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert migration.GOVERNED == GOVERNED
