"""The one window an outbox cannot close, documented by a test: the receiver has the request and
the dispatcher dies before it records the delivery. After recovery the effect is sent again —
with the same idempotency key, so a receiver that remembers keys sees one effect."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from agent.runtime import Settings
from tests.faults.conftest import (
    Fleet,
    Ledger,
    ScriptedRuns,
    effect_tenant,
    finish,
    sinks_env,
    submit,
    wait_until,
)
from tests.outbox.conftest import HttpSink, SmtpSink, http_request

HELD_S = 10.0
"""How long the sink holds the first request: far past the kill, which comes at once."""


def test_a_worker_killed_during_a_delivery_redelivers_it_with_the_same_key_at_least_once(
    settings: Settings,
    runs_script: ScriptedRuns,
    ledger: Ledger,
    fleet_for: Callable[..., Fleet],
    smtp_sink: SmtpSink,
    http_sink: HttpSink,
) -> None:
    fx = effect_tenant(settings)
    task = runs_script.plan(
        "mid-delivery",
        http_request("POST", http_sink.url("/hook"), body='{"disk": 91}'),
        finish("sent"),
    )
    run_id = submit(settings, fx, "notifier", [task])[task]
    key = f"{run_id}:1:0"
    # The first request is held (the delivery deadline is 2 s: the kill must come before it).
    http_sink.answer(200, delay_s=HELD_S)

    fleet = fleet_for(concurrency=1, **sinks_env(smtp_sink, http_sink))
    [first] = fleet.start(1)
    first.wait_for(lambda: len(http_sink.received) == 1, 60, "the delivery reaching the sink")
    [row] = ledger.outbox(run_id)
    assert (row["status"], row["attempts"]) == ("delivering", 1)
    fleet.kill(first)

    def delivered_and_done() -> bool:
        [row] = ledger.outbox(run_id)
        return bool(row["status"] == "delivered" and ledger.run(run_id)["status"] == "succeeded")

    # The row's lease (4 s) lapses and a fresh worker's dispatcher sends it again.
    fleet.keep(1, until=delivered_and_done, timeout=60, what="redelivery after recovery")
    wait_until(lambda: len(http_sink.received) >= 2, 5, "the second arrival")

    # Raw arrivals: two. Distinct idempotency keys: one. This is at least once, not exactly once.
    assert len(http_sink.received) == 2
    assert http_sink.keys() == Counter({key: 2})
    assert [r.body for r in http_sink.received] == [{"disk": 91}, {"disk": 91}]
    [row] = ledger.outbox(run_id)
    assert (row["status"], row["attempts"], row["idempotency_key"]) == ("delivered", 2, key)
    assert row["response"]["status"] == 200

    # The step that queued it was committed once and never asked for again.
    assert ledger.step_numbers(run_id) == [1, 2]
    assert runs_script.times_asked(task, 1) == 1
