"""One run, its worker SIGKILLed at every step boundary: it still completes, each step is
recorded once and never re-run once committed, and each side effect lands once at its sink.

Boundary k is "step k committed, step k+1 not decided yet": the moment the worker asks the
(scripted) model for step k+1. The hook kills the worker right there, before it gets an answer,
and a fresh worker takes over once the lease lapses. After a step that queued a side effect,
that moment is also between the outbox write and its delivery: the workers here poll the outbox
only at start-up (poll interval 60 s), so the row is still pending when its worker dies, and
the next worker's dispatcher delivers it. Steps with side effects are not adjacent, so no worker
commits one while its dispatcher may still be busy delivering the one before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from agent.runtime import Settings
from tests.faults.conftest import (
    Fleet,
    Ledger,
    ScriptedRuns,
    effect_tenant,
    finish,
    finished_and_delivered,
    search,
    sinks_env,
    submit,
    wait_until,
)
from tests.outbox.conftest import HttpSink, SmtpSink, http_request, send_email

STEPS = 5


def receipts(key: str, smtp: SmtpSink, http: HttpSink) -> int:
    """Raw arrivals carrying `key` at either sink (duplicates counted, not merged)."""
    emails = sum(1 for m in smtp.messages if m["X-Garrison-Idempotency-Key"] == key)
    return emails + http.keys()[key]


def test_a_run_killed_at_every_step_boundary_completes_with_each_step_and_effect_once(
    settings: Settings,
    runs_script: ScriptedRuns,
    ledger: Ledger,
    fleet_for: Callable[..., Fleet],
    smtp_sink: SmtpSink,
    http_sink: HttpSink,
) -> None:
    fx = effect_tenant(settings)
    task = runs_script.plan(
        "boundaries",
        http_request("POST", http_sink.url("/hook"), body='{"disk": 91}'),
        search("disk alerts runbook"),
        send_email(["ops@example.org"], "Disk 91% full", "Please look."),
        search("disk owners"),
        finish("ops notified"),
    )
    run_id = submit(settings, fx, "notifier", [task])[task]

    def key(step: int) -> str:
        return f"{run_id}:{step}:0"

    fleet = fleet_for(
        concurrency=1, GARRISON_OUTBOX_POLL_INTERVAL_S="60", **sinks_env(smtp_sink, http_sink)
    )
    at_kill: dict[int, dict[str, Any]] = {}
    """Per boundary k: what the outbox and the sinks held for step k when its worker died."""

    def kill_at_each_boundary(asked_task: str, step: int) -> None:
        if asked_task != task or runs_script.times_asked(task, step) != 1:
            return
        # A dispatcher killed mid-delivery is the at-least-once window (its own test); here
        # every kill lands between deliveries.
        wait_until(
            lambda: all(r["status"] != "delivering" for r in ledger.outbox(run_id)),
            30,
            "no delivery in flight",
        )
        committed = step - 1
        at_kill[committed] = {
            "steps": ledger.step_numbers(run_id),
            "outbox": [r["status"] for r in ledger.outbox(run_id) if r["step_number"] == committed],
            "received": receipts(key(committed), smtp_sink, http_sink),
        }
        fleet.kill_driver(run_id)

    problems = runs_script.on_ask(kill_at_each_boundary)
    done = finished_and_delivered(ledger, run_id)
    fleet.keep(1, until=done, timeout=120, what="the run and its deliveries")
    assert problems == []

    # Each boundary was hit with exactly the steps before it committed, and after each step with a
    # side effect, its outbox row was written and not yet delivered.
    assert at_kill == {
        0: {"steps": [], "outbox": [], "received": 0},
        1: {"steps": [1], "outbox": ["pending"], "received": 0},
        2: {"steps": [1, 2], "outbox": [], "received": 0},
        3: {"steps": [1, 2, 3], "outbox": ["pending"], "received": 0},
        4: {"steps": [1, 2, 3, 4], "outbox": [], "received": 0},
    }
    assert len(fleet.killed) == STEPS
    assert len(fleet.procs) == STEPS + 1

    run = ledger.run(run_id)
    assert (run["status"], run["output"], run["step_count"]) == ("succeeded", "ops notified", STEPS)
    assert run["attempts"] == STEPS + 1  # one claim per worker
    assert ledger.step_numbers(run_id) == list(range(1, STEPS + 1))
    # Each step was asked once by the worker killed waiting for it and once by its successor;
    # a committed step asked again would show up here as a 3.
    assert runs_script.asked_of(task) == dict.fromkeys(range(1, STEPS + 1), 2)

    # Counted where the effects land, every arrival, duplicates included.
    assert [(r.method, r.path) for r in http_sink.received] == [("POST", "/hook")]
    assert http_sink.keys() == Counter({key(1): 1})
    assert [m["X-Garrison-Idempotency-Key"] for m in smtp_sink.messages] == [key(3)]
    assert smtp_sink.messages[0]["Subject"] == "Disk 91% full"
    assert ledger.deliveries(run_id) == [(1, "http", "delivered", 1), (3, "email", "delivered", 1)]
