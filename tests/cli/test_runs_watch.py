"""`garrison runs watch ID`: a run's events, replayed and then live, until the run ends."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.cli.conftest import Cli, Proc, in_services, subprocess_env, tenant
from tests.conftest import TenantFixture
from tests.integration.test_run_loop import finish, search

STEP_DELAY_S = 0.3

SUCCEEDED_IN_TWO = [
    ("state", "queued", 0, None),
    ("state", "running", 0, None),
    ("step", "running", 1, "search_documents"),
    ("step", "succeeded", 2, "finish"),
    ("state", "succeeded", 2, None),
]


def submit(settings: Settings, who: TenantFixture) -> uuid.UUID:
    async def work(services: Services) -> uuid.UUID:
        return (await services.runs.submit(who.principal, "assistant", "How much leave?")).id

    return in_services(settings, work)


def drive(settings: Settings) -> None:
    async def work(services: Services) -> None:
        await services.worker().run_until_idle()

    in_services(settings, work)


def script_two_steps(model: ScriptedModelServer, delay_s: float = 0.0) -> None:
    model.enqueue(search("leave"), delay_s=delay_s)
    model.enqueue(finish("30 days"), delay_s=delay_s)


def event_lines(stdout: str) -> list[list[str]]:
    """The human event lines, split into words (time, kind, status, 'step', n, tool...)."""
    return [line.split() for line in stdout.splitlines() if line[:2].isdigit()]


def test_a_finished_run_is_replayed_and_the_watch_exits(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer
) -> None:
    script_two_steps(scripted_model)
    run_id = submit(settings, tenant(settings))
    drive(settings)

    human = cli.ok("runs", "watch", str(run_id)).stdout
    assert human.splitlines()[0] == f"watching run {run_id} (agent assistant)"
    lines = event_lines(human)
    assert [(w[1], w[2], int(w[4]), w[5] if len(w) > 5 else None) for w in lines] == (
        SUCCEEDED_IN_TWO
    )
    assert human.splitlines()[-1] == f"run {run_id} succeeded after 2 step(s)"

    result = cli.ok("runs", "watch", str(run_id), "--json")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["kind"], e["status"], e["step"], e["tool"]) for e in events] == SUCCEEDED_IN_TWO
    assert {e["run_id"] for e in events} == {str(run_id)}
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids))
    assert set(events[0]) == {
        "id",
        "run_id",
        "kind",
        "status",
        "step",
        "created_at",
        "tool",
        "error_code",
    }

    # From now on, a finished run has nothing more to say: only its outcome.
    later = cli.ok("runs", "watch", str(run_id), "--from-now").stdout
    assert event_lines(later) == []
    assert later.splitlines()[-1] == f"run {run_id} succeeded after 2 step(s)"


def test_a_failed_run_exits_0_and_says_why(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer
) -> None:
    for _ in range(3):  # every decision attempt answers garbage
        scripted_model.enqueue("not json at all")
    run_id = submit(settings, tenant(settings))
    drive(settings)

    human = cli.ok("runs", "watch", str(run_id)).stdout
    assert event_lines(human)[-2][1:] == [
        "step", "failed", "step", "1", "error", "invalid_model_output"
    ]  # fmt: skip
    assert human.splitlines()[-1].startswith(f"run {run_id} failed: invalid_model_output: ")

    as_json = cli("runs", "watch", str(run_id), "--json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout.splitlines()[-1])["status"] == "failed"
    assert f"run {run_id} failed: invalid_model_output" in as_json.stderr


def test_an_unknown_run_is_not_found(cli: Cli) -> None:
    cli.fails(1, "not_found", "runs", "watch", str(uuid.uuid4()))


def test_a_live_watch_prints_each_event_as_it_happens_and_exits_with_the_run(
    cli_env: dict[str, str],
    settings: Settings,
    scripted_model: ScriptedModelServer,
    spawn: Callable[..., Proc],
) -> None:
    script_two_steps(scripted_model, delay_s=STEP_DELAY_S)
    run_id = submit(settings, tenant(settings))
    watcher = spawn("runs", "watch", str(run_id), "--json", env=subprocess_env(**cli_env))
    # The queued state is printed once the watch is subscribed; only then does the run start.
    watcher.wait_for(lambda: '"queued"' in watcher.stdout, 30, "the watch to start")
    assert watcher.popen.poll() is None  # a queued run: the watch waits

    drive(settings)
    assert watcher.popen.wait(timeout=15) == 0, watcher.describe()
    events = [json.loads(line) for line in watcher.stdout.splitlines()]
    assert [(e["kind"], e["status"], e["step"], e["tool"]) for e in events] == SUCCEEDED_IN_TWO
