"""The run ledger. The runs table is also the work queue that workers claim from.

Every status this module writes is first allowed by `agent.domain.check_transition`; where a
status is chosen inside SQL (a claim that parks or cancels instead of driving, a step that ends a
cancelled run), each branch of the CASE is checked when the statement is built. Row locks and
guarded UPDATEs, not application locks, make cancel, claim and step commit safe to race.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import (
    Row,
    Table,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agent.domain import (
    AgentDefinition,
    OutboxEffect,
    Run,
    RunOutcome,
    RunStatus,
    Step,
    StepStatus,
    check_transition,
)
from agent.errors import IllegalTransition, LeaseLost
from datastore.errors import translated
from datastore.fastpath import FastPath
from datastore.repos.audit import append_entry
from datastore.repos.run_access import runs_within
from datastore.repos.run_queue import RunQueue
from datastore.repos.step_commits import StepCommit, StepCommitter
from datastore.schema import RunRow, StepRow

RUNS = cast(Table, RunRow.__table__)
STEPS = cast(Table, StepRow.__table__)


def _run(row: Row[Any]) -> Run:
    return Run(
        id=row.id,
        tenant_id=row.tenant_id,
        agent_id=row.agent_id,
        agent_name=row.agent_name,
        input=row.input,
        status=RunStatus(row.status),
        output=row.output,
        failure_code=row.failure_code,
        failure_detail=row.failure_detail,
        step_count=row.step_count,
        attempts=row.attempts,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        idempotency_key=row.idempotency_key,
        cancel_requested_at=row.cancel_requested_at,
        parent_run_id=row.parent_run_id,
        forked_from_step=row.forked_from_step,
        deployment=row.deployment,
        api_key_id=row.api_key_id,
        access_tags=None if row.access_tags is None else tuple(row.access_tags),
    )


def _step(row: Row[Any]) -> Step:
    return Step(
        run_id=row.run_id,
        number=row.number,
        status=StepStatus(row.status),
        context=row.context,
        decision=row.decision,
        tool=row.tool,
        arguments=row.arguments,
        result=row.result,
        error_code=row.error_code,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        model_ms=row.model_ms,
        tool_ms=row.tool_ms,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _new_run(
    tenant_id: uuid.UUID,
    agent: AgentDefinition,
    input: str,
    api_key_id: uuid.UUID | None,
    access_tags: tuple[str, ...] | None,
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "tenant_id": tenant_id,
        "agent_id": agent.id,
        "agent_name": agent.name,
        "api_key_id": api_key_id,
        "access_tags": None if access_tags is None else list(access_tags),
        "input": input,
        "status": RunStatus.QUEUED.value,
        "step_count": 0,
        "attempts": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
    }


def _moves(target: RunStatus, *sources: RunStatus) -> str:
    """`target`'s stored value, once every source may move to it: a status picked by a CASE in
    SQL is still one the transition table allows."""
    for source in sources:
        check_transition(source, target)
    return target.value


class RunRepository:
    def __init__(self, engine: AsyncEngine, url: str, fast: FastPath) -> None:
        self._engine = engine
        self._commits = StepCommitter(url)
        self._queue = RunQueue(fast)

    async def create_run(
        self,
        tenant_id: uuid.UUID,
        agent: AgentDefinition,
        input: str,
        api_key_id: uuid.UUID | None,
        access_tags: tuple[str, ...] | None = None,
    ) -> Run:
        row = await self._queue.create(
            tenant_id, agent.id, agent.name, input, api_key_id, access_tags
        )
        return _run(row)

    async def insert_keyed_run(
        self,
        tenant_id: uuid.UUID,
        agent: AgentDefinition,
        input: str,
        api_key_id: uuid.UUID | None,
        idempotency_key: str,
        request_hash: str,
        access_tags: tuple[str, ...] | None = None,
    ) -> Run | None:
        # ON CONFLICT on the partial unique index: a concurrent insert of the same key waits for
        # the other transaction and then does nothing, so exactly one run ever holds a key.
        stmt = (
            pg_insert(RUNS)
            .values(
                **_new_run(tenant_id, agent, input, api_key_id, access_tags),
                idempotency_key=idempotency_key,
                request_hash=request_hash,
            )
            .on_conflict_do_nothing(
                index_elements=[RUNS.c.tenant_id, RUNS.c.idempotency_key],
                index_where=RUNS.c.idempotency_key.is_not(None),
            )
            .returning(*RUNS.c)
        )
        async with translated(), self._engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _run(row)

    async def get_keyed_run(
        self, tenant_id: uuid.UUID, idempotency_key: str
    ) -> tuple[Run, str | None] | None:
        stmt = select(RUNS).where(
            RUNS.c.tenant_id == tenant_id, RUNS.c.idempotency_key == idempotency_key
        )
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else (_run(row), row.request_hash)

    async def get_run(
        self,
        run_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        access_tags: tuple[str, ...] | None = None,
    ) -> Run | None:
        stmt = select(RUNS).where(
            RUNS.c.id == run_id, *runs_within(RUNS.c.access_tags, access_tags)
        )
        if tenant_id is not None:
            stmt = stmt.where(RUNS.c.tenant_id == tenant_id)
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _run(row)

    async def list_runs(
        self,
        tenant_id: uuid.UUID | None,
        status: RunStatus | None,
        limit: int,
        access_tags: tuple[str, ...] | None = None,
    ) -> list[Run]:
        stmt = (
            select(RUNS)
            .where(*runs_within(RUNS.c.access_tags, access_tags))
            .order_by(RUNS.c.created_at.desc())
            .limit(limit)
        )
        if tenant_id is not None:
            stmt = stmt.where(RUNS.c.tenant_id == tenant_id)
        if status is not None:
            stmt = stmt.where(RUNS.c.status == status.value)
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_run(r) for r in rows]

    async def list_steps(self, run_id: uuid.UUID, tenant_id: uuid.UUID | None) -> list[Step]:
        if tenant_id is None:  # the worker resuming a run: the fast path
            return [_step(r) for r in await self._queue.steps(run_id)]
        stmt = select(STEPS).where(STEPS.c.run_id == run_id).order_by(STEPS.c.number)
        if tenant_id is not None:
            stmt = stmt.where(STEPS.c.tenant_id == tenant_id)
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_step(r) for r in rows]

    async def claim_next(
        self, worker_id: str, lease_seconds: float, max_attempts: int | None = None
    ) -> Run | None:
        row = await self._queue.claim(worker_id, lease_seconds, max_attempts)
        return None if row is None else _run(row)

    async def renew_leases(
        self, worker_id: str, run_ids: Sequence[uuid.UUID], lease_seconds: float
    ) -> set[uuid.UUID]:
        """Renew every lease in `run_ids` in one statement; the runs still this worker's."""
        return await self._queue.renew_many(list(run_ids), worker_id, lease_seconds)

    async def release_lease(self, run_id: uuid.UUID, worker_id: str) -> None:
        await self._queue.release(run_id, worker_id)

    def _outcome_values(
        self, outcome: RunOutcome, current: RunStatus = RunStatus.RUNNING
    ) -> dict[str, Any]:
        if outcome.status is None:
            return {}
        check_transition(current, outcome.status)
        values: dict[str, Any] = {"status": outcome.status.value}
        if outcome.status.terminal:
            values.update(
                output=outcome.output,
                failure_code=outcome.failure_code,
                failure_detail=outcome.failure_detail,
                finished_at=func.now(),
                worker_id=None,
                lease_expires_at=None,
            )
        return values

    async def record_step(
        self,
        step: Step,
        worker_id: str,
        outcome: RunOutcome,
        effects: Sequence[OutboxEffect] = (),
    ) -> Run:
        # One statement, guarded on worker_id and step_count: a worker that lost its lease, or a
        # step that is not the next one, writes nothing (`datastore.repos.step_commits`).
        row = await self._commits.commit(StepCommit(step, worker_id, outcome, effects))
        if row is None:
            raise LeaseLost(f"run {step.run_id} is no longer leased to {worker_id}")
        return _run(row)

    async def record_steps(
        self,
        steps: Sequence[tuple[Step, Sequence[OutboxEffect]]],
        worker_id: str,
        outcome: RunOutcome,
    ) -> Run:
        *before, (last, effects) = steps
        commit = StepCommit(last, worker_id, outcome, effects, before=tuple(before))
        row = await self._commits.commit(commit)
        if row is None:
            raise LeaseLost(f"run {last.run_id} is no longer leased to {worker_id}")
        return _run(row)

    async def close(self) -> None:
        await self._commits.close()

    async def cancel_run(
        self, run_id: uuid.UUID, tenant_id: uuid.UUID | None, *, actor: str
    ) -> Run | None:
        async with translated(), self._engine.begin() as conn:
            row = await self._lock(conn, run_id, tenant_id)
            if row is None:
                return None
            current = RunStatus(row.status)
            check_transition(current, RunStatus.CANCELLED)
            stmt = update(RUNS).where(RUNS.c.id == run_id)
            requested_at = func.coalesce(RUNS.c.cancel_requested_at, func.now())
            if current == RunStatus.RUNNING and row.leased:
                # A worker may be mid-step: it commits that step and ends the run there
                # (`record_step`). The row lock held here orders this against its commit.
                stmt = stmt.values(cancel_requested_at=requested_at)
            else:
                # Nobody is driving it (queued, parked, awaiting approval, or a running run
                # whose worker is gone): it ends now.
                outcome = RunOutcome.cancelled(f"cancelled while {current.value.replace('_', ' ')}")
                stmt = stmt.values(
                    cancel_requested_at=requested_at,
                    **self._outcome_values(outcome, current),
                )
            run = _run((await conn.execute(stmt.returning(*RUNS.c))).one())
            # `deferred`: a worker holds the run, which ends at its next step boundary.
            deferred = run.status != RunStatus.CANCELLED
            detail = {"from": current.value, "deferred": deferred}
            await _audit_run(conn, run, actor, "run.cancel", detail)
            return run

    async def resume_run(
        self, run_id: uuid.UUID, tenant_id: uuid.UUID | None, *, actor: str
    ) -> Run | None:
        async with translated(), self._engine.begin() as conn:
            row = await self._lock(conn, run_id, tenant_id)
            if row is None:
                return None
            current = RunStatus(row.status)
            # Only parking is resumed by an operator; approval has its own way back to the queue.
            if current != RunStatus.PARKED:
                raise IllegalTransition(f"only a parked run can be resumed; this one is {current}")
            stmt = (
                update(RUNS)
                .where(RUNS.c.id == run_id)
                .values(
                    status=_moves(RunStatus.QUEUED, current),
                    attempts=0,
                    stalled_attempts=0,
                    failure_code=None,
                    failure_detail=None,
                    worker_id=None,
                    lease_expires_at=None,
                )
                .returning(*RUNS.c)
            )
            run = _run((await conn.execute(stmt)).one())
            await _audit_run(conn, run, actor, "run.resume", {"from": current.value})
            return run

    async def _lock(
        self, conn: AsyncConnection, run_id: uuid.UUID, tenant_id: uuid.UUID | None
    ) -> Row[Any] | None:
        """The run's row, locked until the transaction ends, and whether a live lease holds it."""
        leased = func.coalesce(RUNS.c.lease_expires_at > func.now(), False).label("leased")
        stmt = select(RUNS.c.status, leased).where(RUNS.c.id == run_id).with_for_update()
        if tenant_id is not None:
            stmt = stmt.where(RUNS.c.tenant_id == tenant_id)
        return (await conn.execute(stmt)).first()

    async def finish_without_step(
        self, run_id: uuid.UUID, worker_id: str, outcome: RunOutcome
    ) -> Run:
        stmt = (
            update(RUNS)
            .where(
                RUNS.c.id == run_id,
                RUNS.c.worker_id == worker_id,
                RUNS.c.status == RunStatus.RUNNING.value,
            )
            .values(**self._outcome_values(outcome))
            .returning(*RUNS.c)
        )
        async with translated(), self._engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise LeaseLost(f"run {run_id} is no longer leased to {worker_id}")
        return _run(row)


async def _audit_run(
    conn: AsyncConnection, run: Run, actor: str, action: str, detail: dict[str, Any]
) -> None:
    """An operator's change to a run, audited in the change's transaction (its last statement,
    so the audit log's lock is held only until the commit right after)."""
    await append_entry(
        conn,
        tenant_id=run.tenant_id,
        actor=actor,
        action=action,
        object_type="run",
        object_id=str(run.id),
        detail={**detail, "to": run.status.value},
    )
