"""`garrison runs replay|fork`: the upgrade check and forking, from the operator's shell."""

from __future__ import annotations

import json
import uuid

from agent.domain import RunStatus
from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.cli.conftest import Cli, in_services, tenant
from tests.conftest import TenantFixture


def recorded(settings: Settings, who: TenantFixture, model: ScriptedModelServer) -> uuid.UUID:
    """A succeeded two-step run (search, finish) driven by a real worker."""
    model.enqueue({"tool": "search_documents", "arguments": {"query": "annual leave"}})
    model.enqueue({"tool": "finish", "arguments": {"answer": "30 days"}})

    async def work(services: Services) -> uuid.UUID:
        await services.documents.ingest(
            who.tenant.id, title="Leave policy", text="Employees get 30 days of annual leave."
        )
        run = await services.runs.submit(who.principal, "assistant", "How much leave?")
        assert await services.worker().run_until_idle() == 1
        return run.id

    return in_services(settings, work)


def test_replay_of_an_unchanged_run_exits_0(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer
) -> None:
    run_id = recorded(settings, tenant(settings), scripted_model)

    human = cli.ok("runs", "replay", str(run_id)).stdout
    assert f"run {run_id}: today's code decides as recorded (2 of 2 steps match)" in human

    report = cli.json("runs", "replay", str(run_id))
    assert report == {
        "run_id": str(run_id),
        "match": True,
        "steps_recorded": 2,
        "steps_matched": 2,
        "divergence": None,
    }


def test_replay_of_a_divergent_run_exits_1_and_names_the_step(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer
) -> None:
    run_id = recorded(settings, tenant(settings), scripted_model)
    cli.ok("agents", "put", "acme", "assistant", "--instructions", "Be brief.")

    result = cli("runs", "replay", str(run_id))
    assert result.exit_code == 1, result.output
    assert f"run {run_id}: diverges at step 1 (context_changed)" in result.stdout
    assert "field:    context.prompt_sha256" in result.stdout
    assert "matched:  0 of 2 steps before it" in result.stdout
    assert result.stderr == ""

    as_json = cli("runs", "replay", str(run_id), "--json")
    assert as_json.exit_code == 1
    divergence = json.loads(as_json.stdout)["divergence"]
    assert (divergence["step"], divergence["kind"]) == (1, "context_changed")


def test_replay_refusals(cli: Cli, settings: Settings) -> None:
    acme = tenant(settings)

    async def queue(services: Services) -> uuid.UUID:
        return (await services.runs.submit(acme.principal, "assistant", "later")).id

    queued = in_services(settings, queue)
    cli.fails(1, "run_has_no_steps", "runs", "replay", str(queued))
    cli.fails(1, "not_found", "runs", "replay", str(uuid.uuid4()))


def test_replay_help_documents_the_exit_status(cli: Cli) -> None:
    text = " ".join(cli.ok("runs", "replay", "--help").stdout.split())
    assert "0 when today's code decides every recorded step as recorded" in text
    assert "1 when it diverges" in text


def test_fork_from_a_step_then_a_worker_finishes_it(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer
) -> None:
    acme = tenant(settings)
    parent = recorded(settings, acme, scripted_model)

    human = cli.ok("runs", "fork", str(parent), "--from-step", "1").stdout
    assert f"forked from {parent} (steps 1..1 copied)" in human
    assert ": queued," in human

    forked = cli.json("runs", "fork", str(parent), "--from-step", "0")["run"]
    assert forked["status"] == "queued"
    assert (forked["parent_run_id"], forked["forked_from_step"], forked["steps"]) == (
        str(parent),
        0,
        0,
    )
    assert forked["deployment"] is None

    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": "Thirty days."}})
    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": "Thirty days."}})

    async def work(services: Services) -> list[tuple[RunStatus, int]]:
        assert await services.worker().run_until_idle() == 2
        runs = await services.runs.list(acme.tenant.id)
        return [(r.status, r.step_count) for r in runs if r.parent_run_id == parent]

    assert sorted(in_services(settings, work)) == [
        (RunStatus.SUCCEEDED, 1),
        (RunStatus.SUCCEEDED, 2),
    ]


def test_fork_refusals(cli: Cli, settings: Settings, scripted_model: ScriptedModelServer) -> None:
    parent = str(recorded(settings, tenant(settings), scripted_model))
    cli.fails(1, "fork_step_out_of_range", "runs", "fork", parent, "--from-step", "3")
    cli.fails(
        1, "unknown_deployment", "runs", "fork", parent, "--from-step", "1", "--deployment", "x"
    )
    cli.fails(1, "not_found", "runs", "fork", str(uuid.uuid4()), "--from-step", "0")
    cli.fails(2, "usage", "runs", "fork", parent)  # --from-step is required
