"""An approval pending across a SIGKILL: the worker process driving a run dies around the
approval, and a new worker process carries out the decision from Postgres alone. The approved
action runs once and only after approval; a denied one never runs.

Real processes end to end: `garrison worker` processes drive the run (killed with SIGKILL, as in
the rest of tests/faults), a `garrison serve` process takes the approver's decision over HTTP,
and effects are counted where they land, at the loopback SMTP and HTTP sinks. The worker dies:
while the run waits for a person (then approve or deny with no worker alive); while the approved
step's commit is in flight (held on a lock the test takes on the outbox table, so the kill
lands before the commit, every time); and after that commit but before the effect is delivered.

The gated action is step 1; the step carrying out the decision is step 2 and asks no model, so
a model asked for step 2 would be a bug. The effect's idempotency key is `<run>:2:0`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from agent.runtime import Settings
from serving.testing.scripted import ScriptedModelServer
from tests.cli.conftest import Proc, free_port, in_services, subprocess_env
from tests.conftest import TenantFixture
from tests.faults.conftest import (
    READY_TIMEOUT_S,
    Action,
    Fleet,
    Ledger,
    ScriptedRuns,
    effect_tenant,
    finish,
    finished_and_delivered,
    reaches,
    search,
    sinks_env,
    submit,
    wait_until,
    where,
)
from tests.outbox.conftest import HttpSink, SmtpSink, http_request, send_email
from tests.policy.conftest import apply, approver_key
from tests.policy.policies import EXTERNAL_EMAIL, gated_orders

QUOTE = send_email(["eve@partner.example"], "Quote", "Our quote: 100")
UNASKED = search("never asked: the step carrying out a decision asks no model")
"""The plans' step 2 (plans are indexed by step number); `asked_of` proves it unused."""
GatedRun = Callable[[str, str, Action, str], tuple[str, uuid.UUID]]


# -- the approver's side: a real API process -----------------------------------------------------


@dataclass
class Approver:
    """An approver key speaking HTTP to a `garrison serve` process."""

    base_url: str
    secret: str

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        # trust_env=False: a proxy configured in the environment must not sit in between.
        with httpx.Client(base_url=self.base_url, timeout=30, trust_env=False) as http:
            response = http.request(
                method, path, headers={"Authorization": f"Bearer {self.secret}"}, **kwargs
            )
        assert response.status_code == 200, (method, path, response.text)
        return response.json()

    def pending(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call(
            "GET", "/v1/approvals", params={"status": "pending"}
        )["data"]
        return found

    def decide(self, approval_id: str, verb: str, **body: str) -> dict[str, Any]:
        decided: dict[str, Any] = self._call(
            "POST", f"/v1/approvals/{approval_id}/{verb}", json=body
        )
        return decided


@pytest.fixture
def acme(settings: Settings) -> TenantFixture:
    return effect_tenant(settings)


@pytest.fixture
def approver(
    settings: Settings, acme: TenantFixture, spawn: Callable[..., Proc], cli_env: dict[str, str]
) -> Approver:
    secret = in_services(settings, lambda services: approver_key(services, acme.tenant.name))
    port = free_port()
    api = spawn("serve", "--port", str(port), env=subprocess_env(**cli_env))
    base_url = f"http://127.0.0.1:{port}"
    api.wait_http(f"{base_url}/healthz", READY_TIMEOUT_S)
    return Approver(base_url, secret)


# -- the run held for approval -------------------------------------------------------------------


@pytest.fixture
def gated_run(settings: Settings, acme: TenantFixture, runs_script: ScriptedRuns) -> GatedRun:
    """Applies a policy and queues a run of `task` under it: step 1 is the action the policy
    holds for approval, step 2 carries out the decision, step 3 finishes with the answer given.
    Returns the task and the run's id."""

    def queue(policy: str, task: str, gated: Action, answer: str) -> tuple[str, uuid.UUID]:
        in_services(settings, lambda services: apply(services, acme.tenant.name, policy))
        runs_script.plan(task, gated, UNASKED, finish(answer))
        return task, submit(settings, acme, "notifier", [task])[task]

    return queue


def order(http: HttpSink) -> Action:
    return http_request("POST", http.url("/orders"), body='{"qty": 5}')


# -- waiting and asserting -----------------------------------------------------------------------


def awaiting_untouched(
    ledger: Ledger, run_id: uuid.UUID, smtp: SmtpSink, http: HttpSink
) -> dict[str, Any]:
    """What the run, the outbox and the sinks hold while the run waits for a person."""
    run = ledger.run(run_id)
    return {
        "status": run["status"],
        "worker": run["worker_id"],
        "lease": run["lease_expires_at"],
        "steps": ledger.step_numbers(run_id),
        "outbox": ledger.outbox(run_id),
        "delivered": len(smtp.messages) + len(http.received),
    }


WAITING = {
    "status": "awaiting_approval",
    "worker": None,
    "lease": None,
    "steps": [1],
    "outbox": [],
    "delivered": 0,
}


def audited_actions(ledger: Ledger, run_id: uuid.UUID) -> list[tuple[str, str]]:
    """The audit log's step entries of the run, as (object id, action), in order."""
    rows = ledger.rows(
        "SELECT object_id, action FROM audit_log WHERE object_type = 'step' "
        "AND object_id LIKE %s ORDER BY id",
        f"{run_id}:%",
    )
    return [(r["object_id"], r["action"]) for r in rows]


def the_only_approval(approver: Approver, run_id: uuid.UUID, tool: str) -> str:
    [pending] = approver.pending()
    assert (pending["run_id"], pending["step"], pending["tool"]) == (str(run_id), 1, tool)
    return str(pending["id"])


def drive_to_approval(fleet: Fleet, ledger: Ledger, run_id: uuid.UUID) -> Proc:
    """Start one worker and let it drive the run until it waits for a person and the worker is
    done with it: the gated step's audit entry, appended right after its commit, is written.
    (A kill between the two leaves that entry to the audit sweep, which has its own tests.)"""
    [worker] = fleet.start(1)
    awaiting = reaches(ledger, run_id, "awaiting_approval")
    gated = (f"{run_id}:1", "action.await_approval")
    fleet.keep(
        1,
        lambda: awaiting() and audited_actions(ledger, run_id) == [gated],
        60,
        "the run to await approval",
    )
    return worker


def finish_on_a_new_worker(fleet: Fleet, ledger: Ledger, run_id: uuid.UUID) -> Proc:
    """Start one worker and keep one alive until the run succeeded and its effects are out."""
    [worker] = fleet.start(1)
    fleet.keep(1, finished_and_delivered(ledger, run_id), 90, "the run on a new worker")
    return worker


def assert_approved_action_ran_once(
    ledger: Ledger, run_id: uuid.UUID, answer: str, kind: str
) -> None:
    """The run finished with `answer` after its three steps, each stored once; the approved
    step's effect (of `kind`) was delivered at its first attempt; both governed steps were
    audited, once each."""
    run = ledger.run(run_id)
    assert (run["status"], run["output"], run["step_count"]) == ("succeeded", answer, 3)
    assert ledger.step_numbers(run_id) == [1, 2, 3]
    assert ledger.duplicate_steps() == []
    assert ledger.deliveries(run_id) == [(2, kind, "delivered", 1)]
    assert audited_actions(ledger, run_id) == [
        (f"{run_id}:1", "action.await_approval"),
        (f"{run_id}:2", "action.execute"),
    ]


# -- killed while the run waits ------------------------------------------------------------------


def test_an_approval_pending_when_its_worker_is_killed_runs_once_on_a_new_worker(
    settings: Settings,
    acme: TenantFixture,
    gated_run: GatedRun,
    approver: Approver,
    runs_script: ScriptedRuns,
    ledger: Ledger,
    fleet_for: Callable[..., Fleet],
    smtp_sink: SmtpSink,
    http_sink: HttpSink,
) -> None:
    task, run_id = gated_run(EXTERNAL_EMAIL, "quote", QUOTE, "quote sent")
    fleet = fleet_for(concurrency=1, **sinks_env(smtp_sink, http_sink))
    first = drive_to_approval(fleet, ledger, run_id)

    # A live worker leaves a waiting run alone: it takes other work (a probe run), not this.
    probe = runs_script.plan("probe", finish("idle"))
    probe_id = submit(settings, acme, "notifier", [probe])[probe]
    fleet.keep(1, reaches(ledger, probe_id, "succeeded"), 60, "the probe run")
    fleet.kill(first)
    assert awaiting_untouched(ledger, run_id, smtp_sink, http_sink) == WAITING

    approval_id = the_only_approval(approver, run_id, "send_email")
    decided = approver.decide(approval_id, "approve")
    assert (decided["status"], decided["edited"]) == ("approved", False)
    assert ledger.run(run_id)["status"] == "queued"
    assert smtp_sink.messages == []  # decided, and still nothing sent: no worker is alive

    second = finish_on_a_new_worker(fleet, ledger, run_id)
    assert fleet.alive() == [second]

    assert_approved_action_ran_once(ledger, run_id, "quote sent", "email")
    # The gated step and the final one were asked once each; the approved step asked nothing.
    assert runs_script.asked_of(task) == {1: 1, 3: 1}
    [message] = smtp_sink.messages
    assert (message["To"], message["Subject"]) == ("eve@partner.example", "Quote")
    assert message["X-Garrison-Idempotency-Key"] == f"{run_id}:2:0"
    assert http_sink.received == []
    [executed] = ledger.rows("SELECT decision FROM steps WHERE run_id = %s AND number = 2", run_id)
    assert executed["decision"]["approval"]["status"] == "approved"
    assert executed["decision"]["resumed_step"] == 1


def test_an_approval_denied_while_no_worker_is_alive_never_runs(
    gated_run: GatedRun,
    approver: Approver,
    runs_script: ScriptedRuns,
    scripted_model: ScriptedModelServer,
    ledger: Ledger,
    fleet_for: Callable[..., Fleet],
    smtp_sink: SmtpSink,
    http_sink: HttpSink,
) -> None:
    task, run_id = gated_run(EXTERNAL_EMAIL, "quote", QUOTE, "not sent")
    fleet = fleet_for(concurrency=1, **sinks_env(smtp_sink, http_sink))
    fleet.kill(drive_to_approval(fleet, ledger, run_id))
    assert awaiting_untouched(ledger, run_id, smtp_sink, http_sink) == WAITING

    approval_id = the_only_approval(approver, run_id, "send_email")
    reason = "we do not quote by email"
    assert approver.decide(approval_id, "deny", reason=reason)["status"] == "denied"

    finish_on_a_new_worker(fleet, ledger, run_id)

    run = ledger.run(run_id)
    assert (run["status"], run["output"], run["step_count"]) == ("succeeded", "not sent", 3)
    assert ledger.step_numbers(run_id) == [1, 2, 3]
    [refused] = ledger.rows(
        "SELECT tool, result FROM steps WHERE run_id = %s AND number = 2", run_id
    )
    assert refused["tool"] == "send_email"
    assert refused["result"]["error"]["code"] == "approval_denied"
    assert reason in refused["result"]["error"]["message"]
    # The model was told why, and went on without the action.
    [told] = [r for r in scripted_model.chat_requests if where(r) == (task, 3)]
    assert reason in str(told["messages"][-1]["content"])
    assert runs_script.asked_of(task) == {1: 1, 3: 1}
    assert ledger.outbox(run_id) == []
    assert smtp_sink.messages == []
    assert http_sink.received == []
    assert audited_actions(ledger, run_id) == [
        (f"{run_id}:1", "action.await_approval"),
        (f"{run_id}:2", "action.refuse"),
    ]


# -- killed while carrying out the approval ------------------------------------------------------


@contextlib.contextmanager
def outbox_writes_held(url: str) -> Iterator[int]:
    """Hold a SHARE lock on the outbox table until the block ends: reads go on, but a step
    commit (one statement that also writes the outbox) waits for it. Yields the holder's pid."""
    with psycopg.connect(url) as conn:
        conn.execute("LOCK TABLE outbox IN SHARE MODE")
        yield conn.info.backend_pid
        conn.rollback()


def blocked_by(ledger: Ledger, holder: int) -> list[dict[str, Any]]:
    return ledger.rows(
        "SELECT pid, query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", holder
    )


def is_step_commit(query: str) -> bool:
    """Whether `query` is `datastore.repos.step_commits.COMMIT_SQL` (pg_stat_activity shows only
    the first kilobyte of a query, so the test is on how it begins)."""
    return query.lstrip().startswith("WITH input AS (")


def test_a_worker_killed_before_committing_the_approved_step_leaves_it_to_run_once(
    database_url: str,
    gated_run: GatedRun,
    approver: Approver,
    runs_script: ScriptedRuns,
    ledger: Ledger,
    fleet_for: Callable[..., Fleet],
    smtp_sink: SmtpSink,
    http_sink: HttpSink,
) -> None:
    task, run_id = gated_run(gated_orders(http_sink.host), "order", order(http_sink), "ordered")
    fleet = fleet_for(concurrency=1, **sinks_env(smtp_sink, http_sink))
    first = drive_to_approval(fleet, ledger, run_id)
    approval_id = the_only_approval(approver, run_id, "http_request")

    with outbox_writes_held(database_url) as holder:
        assert approver.decide(approval_id, "approve")["status"] == "approved"
        # The live worker claims the run again and takes the approved step; its commit waits.
        wait_until(
            lambda: any(is_step_commit(r["query"]) for r in blocked_by(ledger, holder)),
            60,
            "the approved step's commit waiting on the outbox lock",
        )
        assert ledger.worker_pid(run_id) == first.popen.pid
        fleet.kill(first)
        # Its connections die with it (a dead client's statement would otherwise still run
        # once the lock is released): the commit is lost, not merely late.
        ledger.rows(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE %s = ANY(pg_blocking_pids(pid))",
            holder,
        )
        wait_until(lambda: not blocked_by(ledger, holder), 30, "the dead worker's sessions gone")

    # Nothing of the approved step is stored; the run is still the dead worker's until its lease
    # lapses.
    assert ledger.step_numbers(run_id) == [1]
    assert ledger.outbox(run_id) == []
    assert ledger.run(run_id)["status"] == "running"
    assert http_sink.received == []

    finish_on_a_new_worker(fleet, ledger, run_id)

    assert_approved_action_ran_once(ledger, run_id, "ordered", "http")
    # The first claim, the claim after approval (killed), the last.
    assert ledger.run(run_id)["attempts"] == 3
    assert runs_script.asked_of(task) == {1: 1, 3: 1}
    assert http_sink.keys() == Counter({f"{run_id}:2:0": 1})
    assert [(r.method, r.path, r.body) for r in http_sink.received] == [
        ("POST", "/orders", {"qty": 5})
    ]


def test_a_worker_killed_after_committing_the_approved_step_does_not_repeat_it(
    gated_run: GatedRun,
    approver: Approver,
    runs_script: ScriptedRuns,
    ledger: Ledger,
    fleet_for: Callable[..., Fleet],
    smtp_sink: SmtpSink,
    http_sink: HttpSink,
) -> None:
    task, run_id = gated_run(gated_orders(http_sink.host), "order", order(http_sink), "ordered")
    # The outbox is polled only at start-up: the approved step's effect is still pending when
    # its worker dies, and the next worker's dispatcher delivers it.
    fleet = fleet_for(
        concurrency=1, GARRISON_OUTBOX_POLL_INTERVAL_S="60", **sinks_env(smtp_sink, http_sink)
    )
    drive_to_approval(fleet, ledger, run_id)
    at_kill: list[dict[str, Any]] = []

    def kill_when_asked_for_step_3(asked_task: str, step: int) -> None:
        # Asked for step 3: the approved step 2 is committed, and nothing after it.
        if (asked_task, step) != (task, 3) or runs_script.times_asked(task, 3) != 1:
            return
        at_kill.append(
            {
                "steps": ledger.step_numbers(run_id),
                "outbox": [(r["step_number"], r["status"]) for r in ledger.outbox(run_id)],
                "received": len(http_sink.received),
            }
        )
        fleet.kill_driver(run_id)

    problems = runs_script.on_ask(kill_when_asked_for_step_3)
    approval_id = the_only_approval(approver, run_id, "http_request")
    assert approver.decide(approval_id, "approve")["status"] == "approved"
    wait_until(lambda: bool(fleet.killed) or bool(problems), 60, "the kill after step 2")
    assert problems == []
    assert at_kill == [{"steps": [1, 2], "outbox": [(2, "pending")], "received": 0}]

    finish_on_a_new_worker(fleet, ledger, run_id)

    assert_approved_action_ran_once(ledger, run_id, "ordered", "http")
    # Step 3 was asked by the killed worker and again by its successor; step 2 never.
    assert runs_script.asked_of(task) == {1: 1, 3: 2}
    assert http_sink.keys() == Counter({f"{run_id}:2:0": 1})
