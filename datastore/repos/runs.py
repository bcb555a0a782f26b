"""The run ledger. The runs table is also the work queue that workers claim from."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Row, Table, and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from agent.domain import (
    AgentDefinition,
    OutboxEffect,
    Run,
    RunOutcome,
    RunStatus,
    Step,
    StepStatus,
    check_transition,
    effect_key,
)
from agent.errors import LeaseLost
from datastore.errors import translated
from datastore.schema import OutboxRow, RunRow, StepRow

RUNS = cast(Table, RunRow.__table__)
STEPS = cast(Table, StepRow.__table__)
OUTBOX = cast(Table, OutboxRow.__table__)


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


def _lease_until(seconds: float) -> Any:
    return func.now() + func.make_interval(0, 0, 0, 0, 0, 0, seconds)


class RunRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_run(
        self, tenant_id: uuid.UUID, agent: AgentDefinition, input: str, api_key_id: uuid.UUID | None
    ) -> Run:
        stmt = (
            insert(RUNS)
            .values(
                id=uuid.uuid4(),
                tenant_id=tenant_id,
                agent_id=agent.id,
                agent_name=agent.name,
                api_key_id=api_key_id,
                input=input,
                status=RunStatus.QUEUED.value,
                step_count=0,
                attempts=0,
                prompt_tokens=0,
                completion_tokens=0,
            )
            .returning(*RUNS.c)
        )
        async with translated(), self._engine.begin() as conn:
            return _run((await conn.execute(stmt)).one())

    async def get_run(self, run_id: uuid.UUID, tenant_id: uuid.UUID | None) -> Run | None:
        stmt = select(RUNS).where(RUNS.c.id == run_id)
        if tenant_id is not None:
            stmt = stmt.where(RUNS.c.tenant_id == tenant_id)
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _run(row)

    async def list_runs(
        self, tenant_id: uuid.UUID | None, status: RunStatus | None, limit: int
    ) -> list[Run]:
        stmt = select(RUNS).order_by(RUNS.c.created_at.desc()).limit(limit)
        if tenant_id is not None:
            stmt = stmt.where(RUNS.c.tenant_id == tenant_id)
        if status is not None:
            stmt = stmt.where(RUNS.c.status == status.value)
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_run(r) for r in rows]

    async def list_steps(self, run_id: uuid.UUID, tenant_id: uuid.UUID | None) -> list[Step]:
        stmt = select(STEPS).where(STEPS.c.run_id == run_id).order_by(STEPS.c.number)
        if tenant_id is not None:
            stmt = stmt.where(STEPS.c.tenant_id == tenant_id)
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_step(r) for r in rows]

    async def claim_next(self, worker_id: str, lease_seconds: float) -> Run | None:
        # SKIP LOCKED lets any number of workers poll the same table without blocking each other;
        # a running run whose lease expired belongs to a dead worker and is claimable again.
        candidate = (
            select(RUNS.c.id)
            .where(
                or_(
                    RUNS.c.status == RunStatus.QUEUED.value,
                    and_(
                        RUNS.c.status == RunStatus.RUNNING.value,
                        RUNS.c.lease_expires_at < func.now(),
                    ),
                )
            )
            .order_by(RUNS.c.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        stmt = (
            update(RUNS)
            .where(RUNS.c.id == candidate)
            .values(
                status=RunStatus.RUNNING.value,
                worker_id=worker_id,
                lease_expires_at=_lease_until(lease_seconds),
                attempts=RUNS.c.attempts + 1,
                started_at=func.coalesce(RUNS.c.started_at, func.now()),
            )
            .returning(*RUNS.c)
        )
        async with translated(), self._engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _run(row)

    async def renew_lease(self, run_id: uuid.UUID, worker_id: str, lease_seconds: float) -> bool:
        stmt = (
            update(RUNS)
            .where(
                RUNS.c.id == run_id,
                RUNS.c.worker_id == worker_id,
                RUNS.c.status == RunStatus.RUNNING.value,
            )
            .values(lease_expires_at=_lease_until(lease_seconds))
            .returning(RUNS.c.id)
        )
        async with translated(), self._engine.begin() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def release_lease(self, run_id: uuid.UUID, worker_id: str) -> None:
        stmt = (
            update(RUNS)
            .where(
                RUNS.c.id == run_id,
                RUNS.c.worker_id == worker_id,
                RUNS.c.status == RunStatus.RUNNING.value,
            )
            .values(lease_expires_at=func.now())
        )
        async with translated(), self._engine.begin() as conn:
            await conn.execute(stmt)

    def _outcome_values(self, outcome: RunOutcome) -> dict[str, Any]:
        if outcome.status is None:
            return {}
        check_transition(RunStatus.RUNNING, outcome.status)
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
        # The guard on worker_id and step_count makes the commit conditional on still owning the
        # run and on this being the next step: a worker that lost its lease writes nothing.
        guard = update(RUNS).where(
            RUNS.c.id == step.run_id,
            RUNS.c.worker_id == worker_id,
            RUNS.c.status == RunStatus.RUNNING.value,
            RUNS.c.step_count == step.number - 1,
        )
        stmt = guard.values(
            step_count=step.number,
            prompt_tokens=RUNS.c.prompt_tokens + step.prompt_tokens,
            completion_tokens=RUNS.c.completion_tokens + step.completion_tokens,
            **self._outcome_values(outcome),
        ).returning(*RUNS.c)
        async with translated(), self._engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
            if row is None:
                raise LeaseLost(f"run {step.run_id} is no longer leased to {worker_id}")
            await conn.execute(
                insert(STEPS).values(
                    run_id=step.run_id,
                    tenant_id=row.tenant_id,
                    number=step.number,
                    status=step.status.value,
                    context=step.context,
                    decision=step.decision,
                    tool=step.tool,
                    arguments=step.arguments,
                    result=step.result,
                    error_code=step.error_code,
                    prompt_tokens=step.prompt_tokens,
                    completion_tokens=step.completion_tokens,
                    model_ms=step.model_ms,
                    tool_ms=step.tool_ms,
                    started_at=step.started_at,
                    finished_at=step.finished_at,
                )
            )
            if effects:
                # Same transaction as the step: an effect exists exactly when its step does.
                await conn.execute(
                    insert(OUTBOX),
                    [
                        {
                            "tenant_id": row.tenant_id,
                            "run_id": step.run_id,
                            "step_number": step.number,
                            "call_index": index,
                            "idempotency_key": effect_key(step.run_id, step.number, index),
                            "kind": effect.kind,
                            "payload": effect.payload,
                        }
                        for index, effect in enumerate(effects)
                    ],
                )
        return _run(row)

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
