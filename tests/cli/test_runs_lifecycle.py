"""`garrison runs submit|cancel|resume`, and the lifecycle fields in `runs show`."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator

from agent.domain import RunStatus
from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.cli.conftest import Cli, in_services, tenant

SUBMIT = ("runs", "submit", "--tenant", "acme", "--agent", "assistant")


@contextlib.contextmanager
def background_worker(settings: Settings) -> Iterator[None]:
    """A worker on its own thread and event loop, as a `garrison worker` next to the CLI."""
    stop = threading.Event()

    async def work(services: Services) -> None:
        worker = services.worker()
        task = asyncio.create_task(worker.run_forever())
        while not stop.is_set():
            await asyncio.sleep(0.05)
        worker.stop()
        await asyncio.wait_for(task, 10)

    thread = threading.Thread(target=in_services, args=(settings, work), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "the background worker did not stop"


def park_oldest(settings: Settings) -> uuid.UUID:
    """Claim the oldest claimable run and let its worker die on every allowed attempt."""

    async def work(services: Services) -> uuid.UUID:
        assert await services.store.runs.claim_next("dying", 0.1, 1) is not None
        await asyncio.sleep(0.2)
        parked = await services.store.runs.claim_next("next", 30, 1)
        assert parked is not None
        assert parked.status == RunStatus.PARKED
        return parked.id

    return in_services(settings, work)


def test_submit_with_a_key_returns_the_same_run(cli: Cli, settings: Settings) -> None:
    tenant(settings)
    first = cli.json(*SUBMIT, "Pay invoice 7", "--idempotency-key", "inv-7")
    assert first["replayed"] is False
    run = first["run"]
    assert run["status"] == "queued"
    assert run["idempotency_key"] == "inv-7"
    assert run["tenant_id"]

    again = cli.ok(*SUBMIT, "Pay invoice 7", "-k", "inv-7")
    assert f"run {run['id']} was already submitted with this idempotency key" in again.stdout
    assert f"run {run['id']}: agent assistant, queued" in again.stdout
    replayed = cli.json(*SUBMIT, "Pay invoice 7", "-k", "inv-7")
    assert replayed["replayed"] is True
    assert replayed["run"]["id"] == run["id"]

    cli.fails(1, "idempotency_key_reused", *SUBMIT, "Pay invoice 8", "-k", "inv-7")
    cli.fails(1, "invalid_idempotency_key", *SUBMIT, "Pay invoice 9", "-k", "x" * 201)
    cli.fails(1, "not_found", "runs", "submit", "-t", "nobody", "-a", "assistant", "hi")
    cli.fails(1, "not_found", "runs", "submit", "-t", "acme", "-a", "nobody", "hi")
    listed = cli.json("runs", "list", "--tenant", "acme")["runs"]
    assert [r["id"] for r in listed] == [run["id"]]


def test_submit_and_wait_for_the_answer(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer
) -> None:
    tenant(settings)
    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": "30 days"}})
    for _ in range(3):  # every decision attempt of the second run is invalid
        scripted_model.enqueue("not json")
    with background_worker(settings):
        done = cli.json(*SUBMIT, "How much leave?", "--wait", "--timeout", "20")
        assert done["run"]["status"] == "succeeded"
        assert done["run"]["output"] == "30 days"

        failed = cli(*SUBMIT, "And now?", "--wait", "--timeout", "20")
    assert failed.exit_code == 1, failed.output
    assert ": agent assistant, failed" in failed.stdout
    assert "failure:  invalid_model_output" in failed.stdout


def test_waiting_without_a_worker_times_out(cli: Cli, settings: Settings) -> None:
    tenant(settings)
    result = cli.fails(3, "wait_timeout", *SUBMIT, "Anyone?", "--wait", "--timeout", "0.3")
    assert "is still queued after 0.3 s" in result.stderr


def test_cancel_and_resume(cli: Cli, settings: Settings) -> None:
    tenant(settings)
    queued = cli.json(*SUBMIT, "first")["run"]["id"]
    assert f"run {queued} cancelled after 0 step(s)" in cli.ok("runs", "cancel", queued).stdout
    cli.fails(1, "illegal_transition", "runs", "cancel", queued)
    cli.fails(1, "illegal_transition", "runs", "resume", queued)
    cli.fails(1, "not_found", "runs", "cancel", str(uuid.uuid4()))

    poisoned = cli.json(*SUBMIT, "second")["run"]["id"]
    assert str(park_oldest(settings)) == poisoned
    shown = cli.ok("runs", "show", poisoned).stdout
    assert f"run {poisoned}: agent assistant, parked" in shown
    assert "failure:  worker_lost: its worker was lost on each of 1 attempts" in shown
    resumed = cli.ok("runs", "resume", poisoned).stdout
    assert f"run {poisoned} queued again; it resumes after step 0" in resumed
    again = cli.json("runs", "show", poisoned)["run"]
    assert again["status"] == "queued"
    assert again["attempts"] == 0
    assert again["failure_code"] is None
    cli.fails(1, "illegal_transition", "runs", "resume", poisoned)

    # A running run with a live lease: the cancel waits for the step boundary.
    async def claim(services: Services) -> None:
        assert await services.store.runs.claim_next("busy", 30) is not None

    in_services(settings, claim)
    requested = cli.ok("runs", "cancel", poisoned).stdout
    assert "cancel requested; it stops after the step in progress" in requested
    shown = cli.json("runs", "show", poisoned)["run"]
    assert shown["status"] == "running"
    assert shown["cancel_requested_at"]
    assert "cancel:   requested " in cli.ok("runs", "show", poisoned).stdout


def test_show_has_the_lifecycle_fields(cli: Cli, settings: Settings) -> None:
    tenant(settings)
    run_id = cli.json(*SUBMIT, "q", "-k", "order-42")["run"]["id"]
    human = cli.ok("runs", "show", run_id).stdout
    assert "key:      order-42" in human
    assert "steps:    0 in 0 attempt(s)" in human
    shown = cli.json("runs", "show", run_id)["run"]
    assert shown["idempotency_key"] == "order-42"
    for field in ("cancel_requested_at", "parent_run_id", "forked_from_step", "deployment"):
        assert shown[field] is None
