"""A poison run — one whose step kills any worker that takes it — is parked after
GARRISON_MAX_RUN_ATTEMPTS lost workers while the other runs flow; `garrison runs resume` then
lets it finish once whatever poisoned it is gone."""

from __future__ import annotations

from collections.abc import Callable

from agent import codes
from agent.runtime import Settings
from tests.cli.conftest import Cli, tenant
from tests.faults.conftest import Fleet, Ledger, ScriptedRuns, finish, search, submit

MAX_ATTEMPTS = 2
HEALTHY = 10


def test_a_poison_run_is_parked_after_max_attempts_and_the_others_finish(
    settings: Settings,
    cli: Cli,
    runs_script: ScriptedRuns,
    ledger: Ledger,
    fleet_for: Callable[..., Fleet],
) -> None:
    fx = tenant(settings)
    # Poisoned at step 2, after step 1 committed: the workers lost are counted since that step,
    # including the one that committed it.
    poison = runs_script.plan("poison", search("first"), search("second"), finish("cured"))
    healthy = [
        runs_script.plan(f"healthy-{i}", search(f"q{i}"), finish(f"a{i}")) for i in range(HEALTHY)
    ]
    ids = submit(settings, fx, "assistant", [poison, *healthy])
    poison_id = ids[poison]

    # One run per worker, so a kill loses the poison run and nothing else.
    fleet = fleet_for(concurrency=1, GARRISON_MAX_RUN_ATTEMPTS=str(MAX_ATTEMPTS))
    poisoned = [True]
    kills: list[int] = []

    def kill_whoever_takes_step_2(task: str, step: int) -> None:
        if task == poison and step == 2 and poisoned[0]:
            kills.append(fleet.kill_driver(poison_id))

    runs_script.hooks.append(kill_whoever_takes_step_2)

    def parked_and_others_done() -> bool:
        others_done = ledger.all_succeeded([ids[t] for t in healthy])
        return others_done and ledger.run(poison_id)["status"] == "parked"

    fleet.keep(2, until=parked_and_others_done, timeout=90, what="parking and the healthy runs")

    assert len(kills) == MAX_ATTEMPTS, kills
    assert len(set(kills)) == MAX_ATTEMPTS  # a different worker each time
    parked = ledger.run(poison_id)
    assert parked["failure_code"] == codes.WORKER_LOST
    assert parked["failure_detail"] == f"its worker was lost on each of {MAX_ATTEMPTS} attempts"
    assert (parked["step_count"], parked["attempts"]) == (1, MAX_ATTEMPTS)
    assert runs_script.asked_of(poison) == {1: 1, 2: MAX_ATTEMPTS}  # parked, not driven again
    for task in healthy:
        assert ledger.step_numbers(ids[task]) == [1, 2], task

    # The operator fixes the cause and resumes it: it continues after its committed step 1.
    poisoned[0] = False
    resumed = cli.json("runs", "resume", str(poison_id))["run"]
    assert (resumed["status"], resumed["steps"]) == ("queued", 1)
    fleet.keep(
        2,
        until=lambda: ledger.run(poison_id)["status"] == "succeeded",
        timeout=60,
        what="the resumed run",
    )
    assert ledger.run(poison_id)["output"] == "cured"
    assert ledger.step_numbers(poison_id) == [1, 2, 3]
    assert runs_script.asked_of(poison) == {1: 1, 2: MAX_ATTEMPTS + 1, 3: 1}
    assert ledger.duplicate_steps() == []
