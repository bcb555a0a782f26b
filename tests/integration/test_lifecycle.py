"""The run lifecycle on real Postgres: idempotent submission, cancel at a step boundary, parking
a run whose workers keep dying, resume. Races are run for real, on separate connections."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from agent import codes, domain
from agent.domain import Run, RunOutcome, RunStatus, Step, StepStatus
from agent.errors import IllegalTransition, NotFound
from agent.runtime import Services
from agent.services.runs import IdempotencyKeyReused, InvalidIdempotencyKey
from agent.worker import Worker
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture
from tests.integration.test_run_loop import finish, search


def a_step(run_id: uuid.UUID, number: int) -> Step:
    now = datetime.now(UTC)
    return Step(
        run_id=run_id,
        number=number,
        status=StepStatus.COMPLETED,
        context={},
        decision={},
        tool="search_documents",
        arguments={"query": "q"},
        result={"hits": []},
        error_code=None,
        prompt_tokens=1,
        completion_tokens=1,
        model_ms=1.0,
        tool_ms=1.0,
        started_at=now,
        finished_at=now,
    )


def worker_with(services: Services, **agent: object) -> Worker:
    settings = services.settings.agent.model_copy(update=agent)
    return Worker(services.store.runs, services.run_loop(), settings)


async def wait_for(predicate: object, what: str, timeout: float = 10.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


# -- idempotent submission -----------------------------------------------------------------------


async def test_one_key_submitted_concurrently_makes_exactly_one_run(
    services: Services, acme: TenantFixture
) -> None:
    submissions = await asyncio.gather(
        *[
            services.runs.request(
                acme.tenant.id, "assistant", "Pay invoice 7", idempotency_key="i7"
            )
            for _ in range(20)
        ]
    )
    assert len({s.run.id for s in submissions}) == 1
    assert [s.replayed for s in submissions].count(False) == 1
    runs = await services.runs.list(acme.tenant.id)
    assert [r.idempotency_key for r in runs] == ["i7"]


async def test_a_key_returns_its_run_for_the_same_request_only(
    services: Services, acme: TenantFixture, globex: TenantFixture
) -> None:
    first = await services.runs.submit(acme.principal, "assistant", "Pay invoice 7", "k-1")
    again = await services.runs.request(
        acme.tenant.id, "assistant", "Pay invoice 7", idempotency_key="k-1"
    )
    assert again.replayed
    assert again.run.id == first.id
    assert first.idempotency_key == "k-1"
    with pytest.raises(IdempotencyKeyReused) as reused:
        await services.runs.submit(acme.principal, "assistant", "Pay invoice 8", "k-1")
    assert reused.value.code == "idempotency_key_reused"
    await services.tenancy.put_agent("acme", "other", instructions="x", actor="test")
    with pytest.raises(IdempotencyKeyReused):
        await services.runs.submit(acme.principal, "other", "Pay invoice 7", "k-1")
    # Keys are per tenant: another tenant's identical key is another run.
    theirs = await services.runs.submit(globex.principal, "assistant", "Pay invoice 7", "k-1")
    assert theirs.id != first.id
    # Without a key every submission is a new run.
    plain = [await services.runs.submit(acme.principal, "assistant", "Pay invoice 7") for _ in "ab"]
    assert plain[0].id != plain[1].id
    assert len(await services.runs.list(acme.tenant.id)) == 3


@pytest.mark.parametrize("key", ["", "   ", "x" * 201, "caf\u00e9", "a\nb", "tab\there"])
async def test_malformed_keys_are_refused(
    services: Services, acme: TenantFixture, key: str
) -> None:
    with pytest.raises(InvalidIdempotencyKey) as refused:
        await services.runs.submit(acme.principal, "assistant", "q", key)
    assert refused.value.code == "invalid_idempotency_key"
    assert await services.runs.list(acme.tenant.id) == []


async def test_the_longest_printable_key_is_accepted(
    services: Services, acme: TenantFixture
) -> None:
    key = "".join(chr(c) for c in range(0x20, 0x7F)) + "k" * 105
    assert len(key) == 200
    run = await services.runs.submit(acme.principal, "assistant", "q", key)
    assert run.idempotency_key == key


# -- cancel --------------------------------------------------------------------------------------


async def test_cancelling_a_queued_run_ends_it_at_once(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    run = await services.runs.submit(acme.principal, "assistant", "q")
    cancelled = await services.runs.cancel(run.id, acme.tenant.id, actor="test")
    assert cancelled.status == RunStatus.CANCELLED
    assert cancelled.failure_code == codes.CANCELLED
    assert cancelled.cancel_requested_at is not None
    assert cancelled.finished_at is not None
    assert await services.worker().run_until_idle() == 0
    assert scripted_model.chat_requests == []
    with pytest.raises(IllegalTransition) as again:
        await services.runs.cancel(run.id, acme.tenant.id, actor="test")
    assert again.value.code == "illegal_transition"


async def test_cancel_during_a_step_commits_that_step_and_ends_the_run(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.enqueue(search("leave"), delay_s=1.0)
    scripted_model.enqueue(finish("never asked for"))
    run = await services.runs.submit(acme.principal, "assistant", "q")
    driving = asyncio.create_task(services.worker().run_until_idle())
    await wait_for(lambda: len(scripted_model.chat_requests) == 1, "the first model call")

    requested = await services.runs.cancel(run.id, acme.tenant.id, actor="test")
    assert requested.status == RunStatus.RUNNING  # the step in flight is not interrupted
    assert requested.cancel_requested_at is not None
    assert await asyncio.wait_for(driving, 10) == 1

    final = await services.runs.get(run.id, acme.tenant.id)
    steps = await services.runs.steps(run.id, acme.tenant.id)
    assert final.status == RunStatus.CANCELLED
    assert final.failure_code == codes.CANCELLED
    assert final.failure_detail == "cancelled; it stopped after step 1"
    assert [(s.number, s.tool, s.status) for s in steps] == [
        (1, "search_documents", StepStatus.COMPLETED)
    ]
    assert final.step_count == 1
    assert len(scripted_model.chat_requests) == 1
    assert scripted_model.pending == 1  # step 2 never asked the model


async def test_a_cancel_racing_step_commits_is_never_lost(
    services: Services, acme: TenantFixture
) -> None:
    runs = [await services.runs.submit(acme.principal, "assistant", f"q{i}") for i in range(12)]
    for _ in runs:
        assert await services.store.runs.claim_next("w", 30) is not None

    async def race(run: Run) -> None:
        await asyncio.gather(
            services.runs.cancel(run.id, acme.tenant.id, actor="test"),
            services.store.runs.record_step(a_step(run.id, 1), "w", RunOutcome()),
        )

    await asyncio.gather(*[race(r) for r in runs])
    for run in runs:
        after = await services.runs.get(run.id, acme.tenant.id)
        # Whichever committed first, the cancel is recorded: the run either ended with the
        # step, or it carries the request into the next step boundary.
        assert after.cancel_requested_at is not None
        assert after.step_count == 1
        if after.status == RunStatus.RUNNING:
            step_two = a_step(run.id, 2)
            after = await services.store.runs.record_step(step_two, "w", RunOutcome())
        assert after.status == RunStatus.CANCELLED, run.id
        assert after.failure_code == codes.CANCELLED


async def test_a_step_that_ends_the_run_keeps_its_outcome_over_a_cancel(
    services: Services, acme: TenantFixture
) -> None:
    run = await services.runs.submit(acme.principal, "assistant", "q")
    assert await services.store.runs.claim_next("w", 30) is not None
    await services.runs.cancel(run.id, acme.tenant.id, actor="test")
    done = RunOutcome(RunStatus.SUCCEEDED, output="answered")
    final = await services.store.runs.record_step(a_step(run.id, 1), "w", done)
    assert final.status == RunStatus.SUCCEEDED
    assert final.output == "answered"


async def test_a_claim_cancels_a_run_whose_worker_is_gone_instead_of_driving_it(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    run = await services.runs.submit(acme.principal, "assistant", "q")
    assert await services.store.runs.claim_next("dying", 0.3) is not None
    requested = await services.runs.cancel(run.id, acme.tenant.id, actor="test")
    assert requested.status == RunStatus.RUNNING  # its lease is live: it may be mid-step
    await asyncio.sleep(0.4)

    claimed = await services.store.runs.claim_next("next", 30, 3)
    assert claimed is not None
    assert claimed.id == run.id
    assert claimed.status == RunStatus.CANCELLED
    assert claimed.failure_code == codes.CANCELLED
    assert claimed.attempts == 1  # the claim that ended it does not count as an attempt
    assert await services.worker().run_until_idle() == 0
    assert scripted_model.chat_requests == []


async def test_a_running_run_without_a_live_lease_is_cancelled_at_once(
    services: Services, acme: TenantFixture
) -> None:
    run = await services.runs.submit(acme.principal, "assistant", "q")
    assert await services.store.runs.claim_next("w", 30) is not None
    await services.store.runs.release_lease(run.id, "w")  # a clean stop between steps
    cancelled = await services.runs.cancel(run.id, acme.tenant.id, actor="test")
    assert cancelled.status == RunStatus.CANCELLED
    assert cancelled.failure_detail == "cancelled while running"


async def test_cancel_and_resume_stay_inside_the_tenant(
    services: Services, acme: TenantFixture, globex: TenantFixture
) -> None:
    run = await services.runs.submit(acme.principal, "assistant", "q")
    with pytest.raises(NotFound):
        await services.runs.cancel(run.id, globex.tenant.id, actor="test")
    with pytest.raises(NotFound):
        await services.runs.resume(run.id, globex.tenant.id, actor="test")
    with pytest.raises(NotFound):
        await services.runs.cancel(uuid.uuid4(), None, actor="test")
    assert (await services.runs.get(run.id, None)).status == RunStatus.QUEUED


async def test_status_changes_obey_the_domain_transition_table(
    services: Services, acme: TenantFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await services.runs.submit(acme.principal, "assistant", "q")
    monkeypatch.setitem(
        domain.ALLOWED_TRANSITIONS, RunStatus.QUEUED, frozenset({RunStatus.RUNNING})
    )
    with pytest.raises(IllegalTransition):
        await services.runs.cancel(run.id, acme.tenant.id, actor="test")
    monkeypatch.setitem(
        domain.ALLOWED_TRANSITIONS,
        RunStatus.RUNNING,
        domain.ALLOWED_TRANSITIONS[RunStatus.RUNNING] - {RunStatus.PARKED},
    )
    with pytest.raises(IllegalTransition):  # a claim that could park is refused as a whole
        await services.store.runs.claim_next("w", 30, 3)
    assert (await services.runs.get(run.id, None)).status == RunStatus.QUEUED


# -- parking and resume --------------------------------------------------------------------------


async def test_a_run_whose_workers_keep_dying_is_parked_and_the_others_flow(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    poison = await services.runs.submit(acme.principal, "assistant", "poison")
    healthy = await services.runs.submit(acme.principal, "assistant", "healthy")
    for worker_id in ("w1", "w2"):  # each claims the poison run and dies with it
        claimed = await services.store.runs.claim_next(worker_id, 0.2, 2)
        assert claimed is not None
        assert claimed.id == poison.id
        await asyncio.sleep(0.3)

    scripted_model.set_responder(lambda _req: '{"tool": "finish", "arguments": {"answer": "ok"}}')
    worker = worker_with(services, max_run_attempts=2)
    task = asyncio.create_task(worker.run_forever())
    try:
        for _ in range(300):
            if (await services.runs.get(healthy.id, None)).status.terminal:
                break
            await asyncio.sleep(0.03)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)

    parked = await services.runs.get(poison.id, acme.tenant.id)
    assert parked.status == RunStatus.PARKED
    assert parked.failure_code == codes.WORKER_LOST
    assert parked.failure_detail == "its worker was lost on each of 2 attempts"
    assert parked.attempts == 2
    assert parked.finished_at is None
    assert (await services.runs.get(healthy.id, None)).status == RunStatus.SUCCEEDED
    assert len(scripted_model.chat_requests) == 1  # the parked run was not driven

    with pytest.raises(IllegalTransition):
        await services.runs.resume(healthy.id, acme.tenant.id, actor="test")
    resumed = await services.runs.resume(poison.id, acme.tenant.id, actor="test")
    assert resumed.status == RunStatus.QUEUED
    assert resumed.attempts == 0
    assert resumed.failure_code is None
    assert resumed.failure_detail is None
    assert await worker_with(services, max_run_attempts=2).run_until_idle() == 1
    final = await services.runs.get(poison.id, acme.tenant.id)
    assert final.status == RunStatus.SUCCEEDED
    assert final.attempts == 1
    with pytest.raises(IllegalTransition):
        await services.runs.resume(poison.id, acme.tenant.id, actor="test")


async def test_a_parked_run_can_be_cancelled(services: Services, acme: TenantFixture) -> None:
    run = await services.runs.submit(acme.principal, "assistant", "q")
    assert await services.store.runs.claim_next("w", 0.1, 1) is not None
    await asyncio.sleep(0.2)
    parked = await services.store.runs.claim_next("w2", 30, 1)
    assert parked is not None
    assert parked.status == RunStatus.PARKED
    cancelled = await services.runs.cancel(run.id, acme.tenant.id, actor="test")
    assert cancelled.status == RunStatus.CANCELLED
    assert cancelled.failure_detail == "cancelled while parked"


async def test_clean_hand_overs_do_not_count_towards_parking(
    services: Services, acme: TenantFixture
) -> None:
    run = await services.runs.submit(acme.principal, "assistant", "q")
    for n, worker_id in enumerate(("a", "b", "c"), start=1):
        # Each claim is counted (attempts), but a released one does not move it towards parking.
        claimed = await services.store.runs.claim_next(worker_id, 30, 1)
        assert claimed is not None
        assert claimed.status == RunStatus.RUNNING
        assert claimed.attempts == n
        await services.store.runs.release_lease(run.id, worker_id)
    assert (await services.runs.get(run.id, None)).status == RunStatus.RUNNING


async def test_a_run_that_makes_progress_between_lost_workers_is_not_parked(
    services: Services, acme: TenantFixture
) -> None:
    """Parking counts workers lost since the last committed step, not over the run's life."""
    run = await services.runs.submit(acme.principal, "assistant", "q")
    for number, worker_id in enumerate(("a", "b", "c", "d"), start=1):
        claimed = await services.store.runs.claim_next(worker_id, 0.05, 2)
        assert claimed is not None
        assert claimed.status == RunStatus.RUNNING, worker_id
        # The worker commits one step, then dies: its lease lapses without a release.
        await services.store.runs.record_step(a_step(run.id, number), worker_id, RunOutcome())
        await asyncio.sleep(0.1)
    progressed = await services.runs.get(run.id, None)
    assert progressed.status == RunStatus.RUNNING
    assert progressed.step_count == 4
    assert progressed.attempts == 4

    # Two workers lost at step 5, with max 2: "d", which committed step 4 and died before step
    # 5, and "e", which claimed it after "d". The next claim parks it.
    lost = await services.store.runs.claim_next("e", 0.05, 2)
    assert lost is not None
    assert lost.status == RunStatus.RUNNING
    await asyncio.sleep(0.1)
    parked = await services.store.runs.claim_next("f", 30, 2)
    assert parked is not None
    assert parked.status == RunStatus.PARKED
