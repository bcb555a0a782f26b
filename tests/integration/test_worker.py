"""Claiming, leases and resumption: the parts of durability the skeleton already guarantees."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from agent.domain import RunOutcome, RunStatus, Step, StepStatus
from agent.errors import LeaseLost
from agent.runtime import Services
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture
from tests.integration.test_run_loop import finish, search


async def test_two_workers_never_claim_the_same_run(
    services: Services, acme: TenantFixture
) -> None:
    runs = [await services.runs.submit(acme.principal, "assistant", f"q{i}") for i in range(20)]
    claims = await asyncio.gather(
        *[services.store.runs.claim_next(f"w{i % 4}", 30) for i in range(24)]
    )
    claimed = [c.id for c in claims if c is not None]
    assert len(claimed) == 20
    assert set(claimed) == {r.id for r in runs}


async def test_a_worker_without_the_lease_cannot_record_a_step(
    services: Services, acme: TenantFixture
) -> None:
    run = await services.runs.submit(acme.principal, "assistant", "q")
    claimed = await services.store.runs.claim_next("owner", 30)
    assert claimed is not None
    assert claimed.id == run.id
    now = datetime.now(UTC)
    step = Step(
        run_id=run.id,
        number=1,
        status=StepStatus.COMPLETED,
        context={},
        decision={},
        tool="finish",
        arguments={"answer": "x"},
        result={"answer": "x"},
        error_code=None,
        prompt_tokens=1,
        completion_tokens=1,
        model_ms=1.0,
        tool_ms=0.0,
        started_at=now,
        finished_at=now,
    )
    with pytest.raises(LeaseLost):
        await services.store.runs.record_step(step, "intruder", RunOutcome())
    await services.store.runs.record_step(step, "owner", RunOutcome())
    # The same step number twice is refused: a step is never recorded twice.
    with pytest.raises(LeaseLost):
        await services.store.runs.record_step(step, "owner", RunOutcome())
    # A step number that skips ahead is refused too.
    with pytest.raises(LeaseLost):
        await services.store.runs.record_step(replace(step, number=3), "owner", RunOutcome())
    assert len(await services.runs.steps(run.id, acme.tenant.id)) == 1


async def test_expired_lease_resumes_from_the_last_committed_step(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.enqueue(search("first"))
    scripted_model.enqueue(finish("resumed"))
    run = await services.runs.submit(acme.principal, "assistant", "q")

    # Worker A takes one step and then "dies": it neither finishes nor releases its lease.
    claimed = await services.store.runs.claim_next("worker-a", 0.2)
    assert claimed is not None
    taken = 0

    def stop_after_one() -> bool:
        nonlocal taken
        taken += 1
        return taken > 1

    after_a = await services.run_loop().drive(claimed, "worker-a", should_stop=stop_after_one)
    assert after_a.status == RunStatus.RUNNING
    assert after_a.step_count == 1
    assert await services.store.runs.claim_next("worker-b", 30) is None  # lease still held
    await asyncio.sleep(0.3)

    # Worker B claims the expired run and continues at step 2; step 1 is not run again.
    assert await services.worker("worker-b").run_until_idle() == 1
    final = await services.runs.get(run.id, acme.tenant.id)
    steps = await services.runs.steps(run.id, acme.tenant.id)
    assert final.status == RunStatus.SUCCEEDED
    assert final.output == "resumed"
    assert final.attempts == 2
    assert [s.number for s in steps] == [1, 2]
    assert len(scripted_model.chat_requests) == 2
    # The resumed step saw step 1 in its history and reused step 1's passages.
    assert steps[1].context["history_steps"] == [1]
    # The dead worker, were it to come back, can no longer renew a lease on it.
    assert await services.store.runs.renew_leases("worker-a", [run.id], 30) == set()


async def test_worker_loop_processes_concurrent_runs_and_stops_cleanly(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.set_responder(lambda _req: '{"tool": "finish", "arguments": {"answer": "ok"}}')
    runs = [await services.runs.submit(acme.principal, "assistant", f"q{i}") for i in range(12)]
    worker = services.worker()
    task = asyncio.create_task(worker.run_forever())
    for _ in range(200):
        done = [await services.runs.get(r.id, acme.tenant.id) for r in runs]
        if all(r.status == RunStatus.SUCCEEDED for r in done):
            break
        await asyncio.sleep(0.05)
    worker.stop()
    await asyncio.wait_for(task, 5)
    assert all(r.status == RunStatus.SUCCEEDED for r in done)
    assert worker.completed == 12


async def test_a_run_for_a_deleted_agent_fails_cleanly(
    services: Services, acme: TenantFixture
) -> None:
    run = await services.runs.submit(acme.principal, "assistant", "q")
    claimed = await services.store.runs.claim_next("w", 30)
    assert claimed is not None
    ghost = replace(claimed, agent_id=uuid.uuid4())
    final = await services.run_loop().drive(ghost, "w")
    assert final.id == run.id
    assert final.status == RunStatus.FAILED
    assert final.failure_code == "agent_missing"
