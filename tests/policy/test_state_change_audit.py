"""Every executed state change is audited exactly once, on real Postgres: an allowed
`write_record` (a state change with no outbox row) gets the entry the live path and the sweep
both build, naming the key that submitted the run; read-only calls stay unaudited; steps a fork
copied are its parent's; and steps taken before migration 0012 are backfilled by the sweep."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import psycopg

from agent.domain import JSON, Run, RunStatus
from agent.ports.governance import STATE_CHANGING_TOOLS
from agent.runtime import Services
from agent.tools import TOOL_NAMES
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


async def test_the_state_changing_tools_and_the_migrated_rule_agree_with_the_tools(
    services: Services,
) -> None:
    tools = services.tools()
    assert set(tools) == TOOL_NAMES  # every tool is built here, so every tool is classified
    assert {n for n, t in tools.items() if t.changes_state} == STATE_CHANGING_TOOLS
    assert {n for n, t in tools.items() if not t.changes_state} == {
        "search_documents",
        "finish",
        "sql_query",
        "read_record",
    }
    spec = importlib.util.spec_from_file_location("migration_0012", MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert migration.GOVERNED == GOVERNED  # the index's predicate is the sweep's rule
