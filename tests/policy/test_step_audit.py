"""Every governed step audited exactly once, on real Postgres: the live append is idempotent, a
step whose append was lost (its worker died right after the step's commit) is reported by
`audit verify` and appended by the audit sweep with the entry the live path would have written,
and the live path and the sweep racing over one step leave one entry."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from agent.domain import JSON, RunStatus, Step, StepStatus
from agent.policy import step_audit
from agent.runtime import Services, Settings
from datastore import migrate
from datastore.engine import create_async
from datastore.repos.audit import append_entry
from datastore.repos.audit_sweep import GOVERNED
from serving.testing.scripted import ScriptedModelServer
from tests.cli.conftest import Cli, in_services
from tests.conftest import PgCluster, TenantFixture, create_database, drop_database, make_tenant
from tests.outbox.conftest import finish, http_request
from tests.policy.audit_trail import appended_with, lose_step_appends, step_entries, sweeper
from tests.policy.conftest import apply, drive, gated_email, start
from tests.policy.policies import DENY_HTTP


async def approved_email_run(
    services: Services, fx: TenantFixture, model: ScriptedModelServer
) -> None:
    """A run with two governed steps: an email held for approval, then sent once approved."""
    run, approval = await gated_email(services, fx, model)
    await services.approvals.approve(approval.id, fx.tenant.id, actor="key:ann")
    model.enqueue(finish("Sent."))
    assert (await drive(services, run)).status is RunStatus.SUCCEEDED


async def test_a_step_appended_twice_has_one_entry_and_the_chain_holds(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await apply(services, "acme", DENY_HTTP)
    scripted_model.enqueue(http_request("POST", "http://127.0.0.1:9/x"))
    scripted_model.enqueue(finish("could not"))
    run = await start(services, acme)
    refused, _done = await services.runs.steps(run.id, acme.tenant.id)
    [entry] = (await step_entries(services))[f"{run.id}:1"]
    head = await services.audit.verify()

    # The live path once more, and the repository directly: nothing is written.
    await services.governance.audit_step(run, refused, [])
    again = step_audit.step_entry(
        acme.tenant.id, refused, [], gated=False, api_key_id=run.api_key_id
    )
    assert await step_audit.append(services.store.audit, again) is None

    assert (await step_entries(services))[f"{run.id}:1"] == [entry]
    report = await services.audit.verify()
    assert report.ok
    assert (report.checked, report.head_id, report.head_hash) == (
        head.checked,
        head.head_id,
        head.head_hash,
    )
    assert entry.action == "action.refuse"


async def test_concurrent_appends_of_one_step_write_one_entry(
    services: Services, acme: TenantFixture
) -> None:
    audit = services.store.audit
    detail: JSON = {"tool": "send_email"}
    results = await asyncio.gather(
        *(
            audit.append_once(
                tenant_id=acme.tenant.id,
                actor="run:x",
                action="action.execute",
                object_type="step",
                object_id="x:1",
                detail=detail,
            )
            for _ in range(8)
        )
    )
    assert sum(r is not None for r in results) == 1
    assert len((await step_entries(services))["x:1"]) == 1
    assert (await services.audit.verify()).ok
    with pytest.raises(ValueError, match="not indexed"):
        await audit.append_once(
            tenant_id=None, actor="a", action="b", object_type="tenant", object_id="t", detail={}
        )


async def test_a_step_whose_append_was_lost_is_reported_then_swept_exactly_once(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    lost = lose_step_appends(services)
    await approved_email_run(services, acme, scripted_model)
    # The steps committed (the approval request, then the email sent); their entries did not.
    assert [e["action"] for e in lost.asked] == ["action.await_approval", "action.execute"]
    assert await step_entries(services) == {}

    reported = await services.audit_sweep.missing(sample=5)
    assert (reported.count, reported.overdue) == (2, 0)  # pending: finished moments ago
    assert [(m.number, m.tenant_id) for m in reported.first] == [
        (1, acme.tenant.id),
        (2, acme.tenant.id),
    ]
    assert (await services.audit_sweep.missing(sample=1, grace_s=0)).overdue == 2

    assert await sweeper(services).sweep() == 2
    entries = await step_entries(services)
    # Exactly what the live path asked for, one entry per step.
    for asked in lost.asked:
        [entry] = entries[asked["object_id"]]
        assert appended_with(entry) == asked
    assert entries[lost.asked[1]["object_id"]][0].detail["effects"] == ["email"]
    assert (await services.audit.verify()).ok
    assert (await services.audit_sweep.missing(sample=5)).count == 0

    # Nothing missing: another sweep appends nothing.
    before = await services.store.audit.list_entries(None, 1)
    assert await sweeper(services).sweep() == 0
    assert await services.store.audit.list_entries(None, 1) == before


async def test_the_sweep_is_a_no_op_when_nothing_is_missing(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await approved_email_run(services, acme, scripted_model)
    before = await services.store.audit.list_entries(None, 10_000)
    assert len([e for e in before if e.object_type == "step"]) == 2
    sweep = sweeper(services)
    assert [await sweep.sweep() for _ in range(3)] == [0, 0, 0]
    assert await services.store.audit.list_entries(None, 10_000) == before
    # With the settling time the workers use, a range just marked is not due: one row read.
    assert await services.audit_sweep.sweep() == 0


async def test_the_live_append_and_the_sweep_racing_leave_one_entry_per_step(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    real = services.governance
    lose_step_appends(services)
    await apply(services, "acme", DENY_HTTP)
    for _ in range(3):
        scripted_model.enqueue(http_request("POST", "http://127.0.0.1:9/x"))
    run = await start(services, acme)
    assert (run.status, run.failure_code) == (RunStatus.FAILED, "policy_denied")
    steps = await services.runs.steps(run.id, acme.tenant.id)
    assert len(steps) == 3
    assert await step_entries(services) == {}

    # The worker comes back to each append while two sweeps fill the same steps.
    await asyncio.gather(
        *(real.audit_step(run, step, []) for step in steps),
        sweeper(services).sweep(),
        sweeper(services, limit=1).sweep(),
    )
    entries = await step_entries(services)
    assert sorted(entries) == sorted(f"{run.id}:{s.number}" for s in steps)
    assert all(len(e) == 1 for e in entries.values())
    assert (await services.audit.verify()).ok


async def test_the_sql_rule_matches_the_audited_rule(
    services: Services, acme: TenantFixture, database_url: str
) -> None:
    """`GOVERNED` (SQL, and `ix_steps_governed`) selects exactly the steps `audited` does."""
    cases: list[tuple[JSON, str, StepStatus]] = [
        ({}, "search", StepStatus.COMPLETED),
        ({"policy": None}, "search", StepStatus.COMPLETED),
        ({"policy": {}}, "search", StepStatus.COMPLETED),
        ({"policy": {"verdict": "allow"}}, "search", StepStatus.COMPLETED),
        ({"policy": {"verdict": "deny"}}, "search", StepStatus.COMPLETED),
        ({"policy": {"verdict": "require_approval"}, "approval": {"id": "a"}}, "search",
         StepStatus.COMPLETED),
        ({"policy": {"verdict": None}}, "search", StepStatus.COMPLETED),
        ({"approval": {"status": "denied"}}, "search", StepStatus.COMPLETED),
        ({"resumed_step": 1}, "search", StepStatus.COMPLETED),
        ({"attempts": [{"raw": "{}"}]}, "search", StepStatus.COMPLETED),
        # State-changing tools: every completed step, allowed or under no policy at all.
        ({"policy": {"verdict": "allow"}}, "write_record", StepStatus.COMPLETED),
        ({}, "send_email", StepStatus.COMPLETED),
        ({}, "http_request", StepStatus.COMPLETED),
        ({}, "write_record", StepStatus.FAILED),  # cut short before it ran (a budget)
        ({"policy": {"verdict": "allow"}}, "read_record", StepStatus.COMPLETED),
        ({}, "sql_query", StepStatus.COMPLETED),
    ]  # fmt: skip
    run = await services.runs.submit(acme.principal, "assistant", "task")
    now = datetime.now(UTC)
    with psycopg.connect(database_url) as conn:
        for number, (decision, tool, status) in enumerate(cases, start=1):
            conn.execute(
                "INSERT INTO steps (run_id, tenant_id, number, status, context, decision, tool,"
                " arguments, result, error_code, prompt_tokens, completion_tokens, model_ms,"
                " tool_ms, started_at, finished_at) VALUES (%s, %s, %s, %s, '{}', %s,"
                " %s, '{}', '{}', NULL, 0, 0, 0, 0, %s, %s)",
                (run.id, acme.tenant.id, number, status.value, json.dumps(decision), tool, now,
                 now),
            )  # fmt: skip
        # The query's predicate is the index's: the planner can read governed steps through it.
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(f"EXPLAIN SELECT id FROM steps WHERE {GOVERNED}").fetchall()
        assert "ix_steps_governed" in " ".join(str(row[0]) for row in plan)
    expected = {
        n
        for n, (decision, tool, status) in enumerate(cases, start=1)
        if step_audit.audited(_step(run.id, n, decision, tool, status), [])
    }
    assert expected == {5, 6, 7, 8, 9, 11, 12, 13}
    reported = await services.audit_sweep.missing(sample=50)
    assert {m.number for m in reported.first} == expected
    assert await sweeper(services).sweep() == len(expected)
    assert {k.split(":")[1] for k in await step_entries(services)} == {str(n) for n in expected}


def _step(
    run_id: uuid.UUID,
    number: int,
    decision: JSON,
    tool: str = "search",
    status: StepStatus = StepStatus.COMPLETED,
) -> Step:
    now = datetime.now(UTC)
    return Step(
        run_id=run_id,
        number=number,
        status=status,
        context={},
        decision=decision,
        tool=tool,
        arguments={},
        result={},
        error_code=None,
        prompt_tokens=0,
        completion_tokens=0,
        model_ms=0,
        tool_ms=0,
        started_at=now,
        finished_at=now,
    )


def test_verify_reports_missing_entries_and_fails_once_they_are_overdue(
    cli: Cli, settings: Settings, database_url: str, scripted_model: ScriptedModelServer
) -> None:
    async def lose(services: Services) -> None:
        fx = await make_tenant(services, "acme")
        lose_step_appends(services)
        await approved_email_run(services, fx, scripted_model)

    in_services(settings, lose)
    report = cli.json("audit", "verify")
    assert report["ok"] is True  # pending: the chain holds, the sweep has not run yet
    missing = report["missing"]
    assert (missing["code"], missing["count"], missing["overdue"]) == ("audit_entry_missing", 2, 0)
    assert [m["step"] for m in missing["first"]] == [1, 2]
    assert "2 governed steps lack their audit entry" in cli.ok("audit", "verify").stdout

    # The same steps as if they had finished an hour ago, with no worker sweeping since.
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE steps SET finished_at = finished_at - %s", (timedelta(hours=1),))
    human = cli("audit", "verify")
    assert human.exit_code == 1, human.output
    assert "error[audit_entry_missing]: 2 governed steps finished over 300 s ago" in human.stderr
    assert "2 governed steps lack their audit entry (audit_entry_missing): 2 overdue" in (
        human.stdout
    )
    as_json = cli("audit", "verify", "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["ok"] is False
    error = json.loads(as_json.stderr.strip().splitlines()[-1])["error"]
    assert error["code"] == "audit_entry_missing"

    assert in_services(settings, lambda s: sweeper(s).sweep()) == 2
    report = cli.json("audit", "verify")
    assert (report["ok"], report["missing"]["count"]) == (True, 0)


def test_migration_keeps_steps_audited_twice_before_it(pg_cluster: PgCluster) -> None:
    """The log is append-only: a step audited twice before 0010 keeps both entries, the index
    exempts exactly those, and every other step, old or new, has at most one."""
    name = create_database(pg_cluster, migrated=False)
    url = pg_cluster.url_for(name)
    try:
        migrate.upgrade(url, "0009")
        asyncio.run(_append_raw(url, ["r:1", "r:1", "r:2"]))
        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_audit_log_step'"
            ).fetchone()
            assert row is not None
            assert "WHEN (id = 2) THEN id" in row[0]  # the one surplus entry, exempt
            # Neither old step may get another entry; a new step gets one, and only one.
            for taken in ("r:1", "r:2"):
                with pytest.raises(psycopg.errors.UniqueViolation):
                    _insert_step_entry(conn, taken)
            _insert_step_entry(conn, "r:3")
            with pytest.raises(psycopg.errors.UniqueViolation):
                _insert_step_entry(conn, "r:3")
            counts: dict[str, int] = dict(
                conn.execute(
                    "SELECT object_id, count(*) FROM audit_log GROUP BY object_id"
                ).fetchall()
            )
            assert counts == {"r:1": 2, "r:2": 1, "r:3": 1}
        migrate.downgrade(url, "0009")
        with psycopg.connect(url) as conn:
            gone = conn.execute(
                "SELECT count(*) FROM pg_indexes WHERE indexname IN"
                " ('uq_audit_log_step', 'ix_steps_governed')"
            ).fetchone()
            assert gone == (0,)
        assert migrate.upgrade(url).up_to_date
    finally:
        drop_database(pg_cluster, name)


async def _append_raw(url: str, object_ids: list[str]) -> None:
    """Step entries as a writer before 0010 could have appended them (twice, even)."""
    engine = create_async(url)
    try:
        for object_id in object_ids:
            async with engine.begin() as conn:
                await append_entry(
                    conn,
                    tenant_id=None,
                    actor="run:r",
                    action="action.execute",
                    object_type="step",
                    object_id=object_id,
                    detail={},
                )
    finally:
        await engine.dispose()


def _insert_step_entry(conn: psycopg.Connection[Any], object_id: str) -> None:
    conn.execute(
        "INSERT INTO audit_log (actor, action, object_type, object_id, detail, created_at,"
        " prev_hash, hash) VALUES ('t', 'action.execute', 'step', %s, '{}', now(), '', '')",
        (object_id,),
    )
