"""The worker: claims queued runs from Postgres and drives them, several at a time.

Any number of workers on any number of hosts share one database; `FOR UPDATE SKIP LOCKED` in the
claim keeps them from blocking each other, and a lease hands a dead worker's run to another.
One heartbeat per worker renews all of its leases in one statement every third of the lease
(not a task and a statement per run). On stop, a worker finishes the step in progress, releases
its leases so another worker can resume those runs at once, and returns.

A claim does not always hand over a run to drive: one with a cancel requested ends `cancelled`,
and one whose workers died `max_run_attempts` times is `parked`. The worker only logs those and
claims again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from agent.domain import Run, RunStatus
from agent.errors import LeaseLost
from agent.loop import RunLoop
from agent.ports import RunStore
from agent.settings import AgentSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sweep:
    """Periodic housekeeping a worker runs between claims."""

    run: Callable[[], Awaitable[int]]
    """Does the work; returns how many things it closed."""
    interval_s: float
    name: str = "approval"
    done: str = "closed %d expired or orphaned approval(s)"
    """The log line when it did something, with the count."""


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        runs: RunStore,
        loop: RunLoop,
        settings: AgentSettings,
        worker_id: str | None = None,
        sweeps: Sequence[Sweep] = (),
    ) -> None:
        self._runs = runs
        self._loop = loop
        self._settings = settings
        self.worker_id = worker_id or new_worker_id()
        self._stop = asyncio.Event()
        self.completed = 0
        self._sweeps = tuple(sweeps)
        self._next_sweep = [0.0] * len(self._sweeps)
        self._leased: set[uuid.UUID] = set()
        """The runs being driven; the heartbeat renews their leases."""

    def stop(self) -> None:
        self._stop.set()

    async def run_forever(self) -> None:
        """Claim and drive runs until `stop()`; then finish in-flight steps and return."""
        slots = asyncio.Semaphore(self._settings.worker_concurrency)
        in_flight: set[asyncio.Task[None]] = set()
        async with self._heartbeat():
            while not self._stop.is_set():
                await slots.acquire()
                if self._stop.is_set():  # stopped while every slot was busy: claim nothing more
                    slots.release()
                    break
                run = await self._claim()
                if run is None:
                    slots.release()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self._settings.poll_interval_s)
                    continue
                if run.status != RunStatus.RUNNING:  # ended by the claim itself; look again
                    slots.release()
                    continue
                task = asyncio.create_task(self._drive(run))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(lambda _t: slots.release())
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def run_until_idle(self) -> int:
        """Drive claimable runs one after another until none is left (tests, batch jobs)."""
        done = 0
        async with self._heartbeat():
            while (run := await self._claim()) is not None:
                if run.status == RunStatus.RUNNING:
                    await self._drive(run)
                    done += 1
        return done

    async def _claim(self) -> Run | None:
        settings = self._settings
        await self._maintain()
        try:
            run = await self._runs.claim_next(
                self.worker_id, settings.lease_seconds, settings.max_run_attempts
            )
        except Exception as exc:  # the database being down must not kill the worker
            log.warning("worker %s could not claim a run: %s", self.worker_id, exc)
            return None
        if run is not None and run.status != RunStatus.RUNNING:
            log.warning("run %s %s instead of resumed: %s", run.id, run.status, run.failure_detail)
        return run

    async def _maintain(self) -> None:
        """Housekeeping due before a claim, each sweep at most every `interval_s`: expired
        approvals end their runs, lost audit entries are appended (each one indexed query
        when there is nothing to do)."""
        for i, sweep in enumerate(self._sweeps):
            if time.monotonic() < self._next_sweep[i]:
                continue
            self._next_sweep[i] = time.monotonic() + sweep.interval_s
            try:
                done = await sweep.run()
            except Exception as exc:  # the database being down must not kill the worker
                log.warning("worker %s: the %s sweep failed: %s", self.worker_id, sweep.name, exc)
                continue
            if done:
                log.info("worker %s %s", self.worker_id, sweep.done % done)

    async def _drive(self, run: Run) -> None:
        self._leased.add(run.id)
        try:
            final = await self._loop.drive(run, self.worker_id, should_stop=self._stop.is_set)
            if final.status.terminal:
                self.completed += 1
                log.info("run %s %s after %d steps", run.id, final.status, final.step_count)
            else:
                # Given back, the run has no worker: a renewal still in flight cannot revive it.
                self._leased.discard(run.id)
                await self._runs.release_lease(run.id, self.worker_id)
        except LeaseLost:
            log.warning("run %s: lease lost; another worker owns it now", run.id)
        except Exception:
            # The run keeps its last committed step; its lease expires and it is claimed again.
            log.exception("run %s: worker %s failed mid-run", run.id, self.worker_id)
        finally:
            self._leased.discard(run.id)

    @contextlib.asynccontextmanager
    async def _heartbeat(self) -> AsyncIterator[None]:
        beat = asyncio.create_task(self._renew_forever(), name=f"heartbeat {self.worker_id}")
        try:
            yield
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _renew_forever(self) -> None:
        """Every third of the lease, renew every lease this worker holds in one statement."""
        lease = self._settings.lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            if not self._leased:
                continue
            try:
                await self._runs.renew_leases(self.worker_id, list(self._leased), lease)
            except Exception as exc:
                log.warning("worker %s: lease renewal failed: %s", self.worker_id, exc)
            # Only a drive's end takes its run out of `_leased`, never a renewal's answer: by
            # the time it arrives, the run may have been given back and claimed again by this
            # worker. A run lost to another worker is renewed in vain (the statement is guarded
            # by worker id) until its drive learns of the loss at its next commit.
