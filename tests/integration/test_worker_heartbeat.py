"""A worker's leases in bulk: one heartbeat renews all of them in one statement, and never
revives a lease given back. On real Postgres, with a recording wrapper around the run store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from agent.domain import Run, RunStatus
from agent.runtime import Services
from agent.worker import Worker
from datastore.repos.runs import RunRepository
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture
from tests.integration.test_run_loop import finish


class Recording:
    """The real run store, recording the worker's renewals; with `stale_answers`, the first
    renewals report no lease kept, as answers that arrive after a run was given back and
    claimed again would."""

    def __init__(self, runs: RunRepository, stale_answers: int = 0) -> None:
        self._runs = runs
        self.renewals: list[set[uuid.UUID]] = []
        self._stale = stale_answers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runs, name)

    async def renew_leases(
        self, worker_id: str, run_ids: Sequence[uuid.UUID], lease_seconds: float
    ) -> set[uuid.UUID]:
        self.renewals.append(set(run_ids))
        kept = await self._runs.renew_leases(worker_id, run_ids, lease_seconds)
        if self._stale > 0:
            self._stale -= 1
            return set()
        return kept


def worker(services: Services, store: Recording, **agent: object) -> Worker:
    settings = services.settings.agent.model_copy(update=agent)
    return Worker(store, services.run_loop(), settings, "heartbeat")


async def thefts_while_driven(
    services: Services, acme: TenantFixture, w: Worker, runs: list[Run]
) -> int:
    """Run `w` until it completes `runs`, while a second worker polls to claim them all along;
    how many claims it won (a lease left unrenewed is claimable)."""
    task = asyncio.create_task(w.run_forever())
    for run in runs:
        while (await services.runs.get(run.id, acme.tenant.id)).status is not RunStatus.RUNNING:
            await asyncio.sleep(0.02)
    stolen = 0
    deadline = asyncio.get_running_loop().time() + 20
    while w.completed < len(runs) and asyncio.get_running_loop().time() < deadline:
        if await services.store.runs.claim_next("thief", 30) is not None:
            stolen += 1
        await asyncio.sleep(0.05)
    w.stop()
    await asyncio.wait_for(task, 10)
    return stolen


async def test_one_heartbeat_keeps_every_lease_of_a_worker_alive(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    # Each decision takes longer than the whole lease: only renewals keep the runs from a
    # second worker that polls all along.
    for i in range(2):
        scripted_model.enqueue(finish(f"a{i}"), delay_s=2.0)
    runs = [await services.runs.submit(acme.principal, "assistant", f"q{i}") for i in range(2)]
    store = Recording(services.store.runs)
    w = worker(services, store, worker_concurrency=2, lease_seconds=1.5)
    assert await thefts_while_driven(services, acme, w, runs) == 0
    ids = {r.id for r in runs}
    assert ids in store.renewals  # both leases in one statement
    assert all(renewed <= ids for renewed in store.renewals)
    for run in runs:
        final = await services.runs.get(run.id, acme.tenant.id)
        assert (final.status, final.attempts) == (RunStatus.SUCCEEDED, 1)


async def test_a_renewal_reaching_the_database_after_a_release_leases_nothing(
    services: Services, acme: TenantFixture
) -> None:
    run = await services.runs.submit(acme.principal, "assistant", "q")
    assert await services.store.runs.claim_next("old", 30) is not None
    # The heartbeat took its list of leases, then the run was released (a graceful stop)
    # before the renewal's statement arrived.
    await services.store.runs.release_lease(run.id, "old")
    assert await services.store.runs.renew_leases("old", [run.id], 30) == set()
    successor = await services.store.runs.claim_next("successor", 30)
    assert successor is not None
    assert successor.id == run.id


async def test_a_renewal_answer_that_misses_a_run_does_not_drop_its_lease(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    # The first renewal's answer says the run is not this worker's (as one racing a re-claim
    # by the same worker would); the run is still being driven, so later beats must renew it.
    scripted_model.enqueue(finish("a"), delay_s=2.0)
    run = await services.runs.submit(acme.principal, "assistant", "q")
    store = Recording(services.store.runs, stale_answers=1)
    w = worker(services, store, lease_seconds=1.5)
    assert await thefts_while_driven(services, acme, w, [run]) == 0
    assert sum(run.id in renewed for renewed in store.renewals) >= 2
    final = await services.runs.get(run.id, acme.tenant.id)
    assert (final.status, final.attempts) == (RunStatus.SUCCEEDED, 1)
