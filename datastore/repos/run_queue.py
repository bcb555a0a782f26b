"""The queue half of the run ledger: submitting, claiming and leasing runs, and a run's history
as its worker reads it. Each is one statement on the fast path (`datastore.fastpath`).

A claim takes the oldest claimable run (queued, or running with an expired lease: its worker
died) with `FOR UPDATE SKIP LOCKED`, so any number of workers poll one table without blocking
each other. A claimed run is not always driven: a cancel requested while it was running ends it
there, and a run whose workers died at the same step `max_attempts` times in a row is parked for
an operator (a poison run must not take down worker after worker). Both come back without a
lease. The statuses a claim can write are checked against the one transition table each time.
"""

from __future__ import annotations

import uuid
from typing import Any

from agent.domain import RunOutcome, RunStatus, check_transition
from datastore.fastpath import FastPath

_CLAIM_MOVES = (
    (RunStatus.CANCELLED, (RunStatus.QUEUED, RunStatus.RUNNING)),
    (RunStatus.PARKED, (RunStatus.RUNNING,)),
    (RunStatus.RUNNING, (RunStatus.QUEUED, RunStatus.RUNNING)),
)


def _check_claim_moves() -> None:
    """Every status the claim's CASE can write must be allowed from every status it can read."""
    for target, sources in _CLAIM_MOVES:
        for source in sources:
            check_transition(source, target)


_CANCELLED = RunOutcome.cancelled("cancelled before its next step")
_PARKED = RunOutcome.parked("its worker was lost on each of {n} attempts")

CLAIM_SQL = """
WITH candidate AS (
    SELECT id FROM runs
    WHERE status = 'queued' OR (status = 'running' AND lease_expires_at < now())
    ORDER BY created_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), decided AS (
    SELECT r.id,
           r.cancel_requested_at IS NOT NULL AS cancel,
           r.cancel_requested_at IS NULL AND r.status = 'running'
               AND %(max_attempts)s::int IS NOT NULL
               AND r.stalled_attempts >= %(max_attempts)s::int AS park
    FROM runs r JOIN candidate c ON c.id = r.id
)
UPDATE runs r SET
    status = CASE WHEN d.cancel THEN 'cancelled' WHEN d.park THEN 'parked' ELSE 'running' END,
    worker_id = CASE WHEN d.cancel OR d.park THEN NULL ELSE %(worker_id)s END,
    lease_expires_at = CASE WHEN d.cancel OR d.park THEN NULL
                            ELSE now() + make_interval(secs => %(lease_s)s) END,
    attempts = CASE WHEN d.cancel OR d.park THEN r.attempts ELSE r.attempts + 1 END,
    stalled_attempts = CASE WHEN d.cancel OR d.park THEN r.stalled_attempts
                            ELSE r.stalled_attempts + 1 END,
    started_at = coalesce(r.started_at, now()),
    finished_at = CASE WHEN d.cancel THEN now() ELSE r.finished_at END,
    failure_code = CASE WHEN d.cancel THEN %(cancel_code)s
                        WHEN d.park THEN %(park_code)s ELSE r.failure_code END,
    failure_detail = CASE WHEN d.cancel THEN %(cancel_detail)s
                          WHEN d.park THEN replace(%(park_detail)s, '{n}',
                                                   r.stalled_attempts::text)
                          ELSE r.failure_detail END
FROM decided d
WHERE r.id = d.id
RETURNING r.*
"""

# Every lease a worker holds, renewed by one statement on one timer (`agent.worker`).
RENEW_MANY_SQL = """
UPDATE runs SET lease_expires_at = now() + make_interval(secs => %(lease_s)s)
WHERE id = ANY(%(run_ids)s) AND worker_id = %(worker_id)s AND status = 'running'
RETURNING id
"""

# A clean hand-over is not a lost worker: the claim is given back, so rolling restarts never push
# a healthy run towards parking. The run keeps no worker: a renewal of the old lease that reaches
# the database after the release (the worker's heartbeat renews many runs at once) finds nothing.
RELEASE_SQL = """
UPDATE runs SET lease_expires_at = now(), worker_id = NULL,
                stalled_attempts = greatest(stalled_attempts - 1, 0)
WHERE id = %(run_id)s AND worker_id = %(worker_id)s AND status = 'running'
"""

STEPS_SQL = "SELECT * FROM steps WHERE run_id = %(run_id)s ORDER BY number"

CREATE_SQL = """
INSERT INTO runs (id, tenant_id, agent_id, agent_name, api_key_id, access_tags, input, status,
                  step_count, attempts, prompt_tokens, completion_tokens)
VALUES (%(id)s, %(tenant_id)s, %(agent_id)s, %(agent_name)s, %(api_key_id)s, %(access_tags)s,
        %(input)s, 'queued', 0, 0, 0, 0)
RETURNING *
"""


class RunQueue:
    def __init__(self, fast: FastPath) -> None:
        self._fast = fast

    async def create(
        self,
        tenant_id: uuid.UUID,
        agent_id: uuid.UUID,
        agent_name: str,
        input: str,
        api_key_id: uuid.UUID | None,
        access_tags: tuple[str, ...] | None = None,
    ) -> Any:
        params = {
            "id": uuid.uuid4(),
            "tenant_id": tenant_id,
            "agent_id": agent_id,
            "agent_name": agent_name,
            "api_key_id": api_key_id,
            "access_tags": None if access_tags is None else list(access_tags),
            "input": input,
        }
        row = await self._fast.fetchone(CREATE_SQL, params)
        assert row is not None  # INSERT ... RETURNING always returns its row
        return row

    async def claim(self, worker_id: str, lease_s: float, max_attempts: int | None) -> Any | None:
        _check_claim_moves()
        return await self._fast.fetchone(
            CLAIM_SQL,
            {
                "worker_id": worker_id,
                "lease_s": lease_s,
                "max_attempts": max_attempts,
                "cancel_code": _CANCELLED.failure_code,
                "cancel_detail": _CANCELLED.failure_detail,
                "park_code": _PARKED.failure_code,
                "park_detail": _PARKED.failure_detail,
            },
        )

    async def renew_many(
        self, run_ids: list[uuid.UUID], worker_id: str, lease_s: float
    ) -> set[uuid.UUID]:
        """The runs among `run_ids` whose leases were renewed (those still this worker's)."""
        params = {"run_ids": run_ids, "worker_id": worker_id, "lease_s": lease_s}
        return {row.id for row in await self._fast.fetchall(RENEW_MANY_SQL, params)}

    async def release(self, run_id: uuid.UUID, worker_id: str) -> None:
        await self._fast.execute(RELEASE_SQL, {"run_id": run_id, "worker_id": worker_id})

    async def steps(self, run_id: uuid.UUID) -> list[Any]:
        return await self._fast.fetchall(STEPS_SQL, {"run_id": run_id})
