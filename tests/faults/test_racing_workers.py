"""Several worker processes racing over one queue of 100 runs: every step is executed once."""

from __future__ import annotations

from collections.abc import Callable

from agent.runtime import Settings
from tests.cli.conftest import tenant
from tests.faults.conftest import Fleet, Ledger, ScriptedRuns, finish, search, submit

RUNS = 100
WORKERS = 3


def test_workers_racing_over_100_runs_execute_each_step_exactly_once(
    settings: Settings,
    runs_script: ScriptedRuns,
    ledger: Ledger,
    fleet_for: Callable[..., Fleet],
) -> None:
    fx = tenant(settings)
    tasks = [
        runs_script.plan(
            f"race-{i:03d}", *[search(f"topic {i}.{s}") for s in range(1 + i % 2)], finish(f"a{i}")
        )
        for i in range(RUNS)
    ]
    # Nobody is killed here, so the lease is long: on a loaded machine a 1.5 s lease can lapse
    # under a live but starved worker, and another worker then rightly asks its step again.
    fleet = fleet_for(concurrency=6, GARRISON_LEASE_SECONDS="30")
    fleet.wait_ready(fleet.start(WORKERS))
    # Submitted while every worker is already polling: they race for each run as it arrives.
    ids = submit(settings, fx, "assistant", tasks)

    fleet.keep(
        WORKERS,
        until=lambda: ledger.all_succeeded(list(ids.values())),
        timeout=150,
        what=f"{RUNS} runs to succeed",
    )
    assert fleet.killed == set()
    assert len(fleet.procs) == WORKERS  # none died, none was replaced

    for task in tasks:
        steps = len(runs_script.plans[task])
        # Counted at the model: one request per (run, step), never two.
        assert runs_script.asked_of(task) == dict.fromkeys(range(1, steps + 1), 1), task
        assert ledger.step_numbers(ids[task]) == list(range(1, steps + 1)), task
    assert ledger.duplicate_steps() == []
    total_steps = sum(len(runs_script.plans[t]) for t in tasks)
    assert sum(runs_script.asked.values()) == total_steps == 250

    # It was a race: every worker finished some of the runs, and together each run once.
    finished = fleet.completed_per_worker()
    assert sum(finished) == RUNS, finished
    assert all(n > 0 for n in finished), finished
