"""Approvals: read, decided once, expired by a sweep. Rows are created by the step commit that
parks their run (`datastore.repos.step_commits`), never here.

Every change takes the approval's row lock first and its run's second, in that order in every
transaction here, so a decision racing the expiry sweep (or another decision) waits instead of
deadlocking; the loser sees the approval already closed. A decision and its run's move back to
`queued` (or to `failed` on expiry) commit together with their audit entry.

A run may wait on several approvals at once (parallel calls): it goes back to the queue with the
last decision. Decisions on one run serialise on its row lock, and each reads the others' status
after taking it (read committed: a fresh snapshot per statement), so exactly one of them sees
none left pending. When one expires, the run fails, and the sweep's next pass closes the others
as cancelled (closing them in the same transaction would take approval locks after the run's,
against the order above).
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import Row, Table, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agent.domain import Approval, ApprovalStatus, RunOutcome, RunStatus, check_transition
from agent.ports import ApprovalDecision, DecisionResult
from datastore.errors import translated
from datastore.repos.audit import append_entry
from datastore.repos.run_access import runs_within
from datastore.repos.runs import RUNS
from datastore.schema import ApprovalRow

APPROVALS = cast(Table, ApprovalRow.__table__)
PENDING = ApprovalStatus.PENDING.value
SWEEPER = "system:approval-expiry"
# Reads report a pending approval past its expiry as expired, sweep or not.
_status = case(
    (
        (APPROVALS.c.status == PENDING) & (APPROVALS.c.expires_at <= func.now()),
        ApprovalStatus.EXPIRED.value,
    ),
    else_=APPROVALS.c.status,
).label("effective_status")
_COLUMNS = (*APPROVALS.c, RUNS.c.agent_name, _status)
_FROM = APPROVALS.join(RUNS, RUNS.c.id == APPROVALS.c.run_id)

for _source, _target in (
    (RunStatus.AWAITING_APPROVAL, RunStatus.QUEUED),
    (RunStatus.AWAITING_APPROVAL, RunStatus.FAILED),
):
    check_transition(_source, _target)


def _approval(row: Row[Any]) -> Approval:
    return Approval(
        id=row.id,
        tenant_id=row.tenant_id,
        run_id=row.run_id,
        agent_name=row.agent_name,
        step_number=row.step_number,
        tool=row.tool,
        arguments=row.arguments,
        rule=row.rule,
        reason=row.reason,
        policy=row.policy,
        provenance=list(row.provenance),
        status=ApprovalStatus(row.effective_status),
        created_at=row.created_at,
        expires_at=row.expires_at,
        decided_at=row.decided_at,
        decided_by=row.decided_by,
        decision_reason=row.decision_reason,
        final_arguments=row.final_arguments,
    )


def _detail(approval: Approval, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": str(approval.run_id),
        "step": approval.step_number,
        "tool": approval.tool,
        "rule": approval.rule,
        "policy_version": approval.policy.get("version"),
        **extra,
    }


class ApprovalRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(
        self,
        approval_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        access_tags: tuple[str, ...] | None = None,
    ) -> Approval | None:
        stmt = (
            select(*_COLUMNS)
            .select_from(_FROM)
            .where(APPROVALS.c.id == approval_id, *runs_within(RUNS.c.access_tags, access_tags))
        )
        if tenant_id is not None:
            stmt = stmt.where(APPROVALS.c.tenant_id == tenant_id)
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _approval(row)

    async def for_step(self, run_id: uuid.UUID, step_number: int) -> Approval | None:
        stmt = (
            select(*_COLUMNS)
            .select_from(_FROM)
            .where(APPROVALS.c.run_id == run_id, APPROVALS.c.step_number == step_number)
        )
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _approval(row)

    async def list_approvals(
        self,
        tenant_id: uuid.UUID | None,
        *,
        status: ApprovalStatus | None = None,
        run_id: uuid.UUID | None = None,
        limit: int = 50,
        access_tags: tuple[str, ...] | None = None,
    ) -> list[Approval]:
        stmt = (
            select(*_COLUMNS)
            .select_from(_FROM)
            .where(*runs_within(RUNS.c.access_tags, access_tags))
            .order_by(APPROVALS.c.created_at.desc(), APPROVALS.c.id)
            .limit(limit)
        )
        if tenant_id is not None:
            stmt = stmt.where(APPROVALS.c.tenant_id == tenant_id)
        if run_id is not None:
            stmt = stmt.where(APPROVALS.c.run_id == run_id)
        if status is not None:
            stmt = stmt.where(_status == status.value)
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_approval(r) for r in rows]

    async def decide(
        self, approval_id: uuid.UUID, tenant_id: uuid.UUID | None, decision: ApprovalDecision
    ) -> tuple[DecisionResult, Approval] | None:
        if decision.status not in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED):
            raise ValueError(f"an approver approves or denies, not {decision.status}")
        async with translated(), self._engine.begin() as conn:
            locked = select(APPROVALS.c.id, APPROVALS.c.status, APPROVALS.c.run_id,
                            (APPROVALS.c.expires_at <= func.now()).label("expired"))  # fmt: skip
            locked = locked.where(APPROVALS.c.id == approval_id).with_for_update()
            if tenant_id is not None:
                locked = locked.where(APPROVALS.c.tenant_id == tenant_id)
            row = (await conn.execute(locked)).first()
            if row is None:
                return None
            if row.status != PENDING:
                return DecisionResult.ALREADY_DECIDED, await self._read(conn, approval_id)
            run_status = (
                await conn.execute(
                    select(RUNS.c.status).where(RUNS.c.id == row.run_id).with_for_update()
                )
            ).scalar_one()
            if row.expired:
                await self._expire(conn, [approval_id])
                return DecisionResult.EXPIRED, await self._read(conn, approval_id)
            if run_status != RunStatus.AWAITING_APPROVAL.value:
                await self._cancel(conn, [approval_id])
                return DecisionResult.RUN_NOT_WAITING, await self._read(conn, approval_id)
            await conn.execute(
                update(APPROVALS)
                .where(APPROVALS.c.id == approval_id)
                .values(
                    status=decision.status.value,
                    decided_at=func.now(),
                    decided_by=decision.actor,
                    decision_reason=decision.reason,
                    final_arguments=decision.final_arguments,
                )
            )
            others = select(func.count()).where(
                APPROVALS.c.run_id == row.run_id,
                APPROVALS.c.status == PENDING,
                APPROVALS.c.id != approval_id,
            )
            if (await conn.execute(others)).scalar_one() == 0:
                await conn.execute(
                    update(RUNS)
                    .where(RUNS.c.id == row.run_id)
                    .values(status=RunStatus.QUEUED.value, worker_id=None, lease_expires_at=None)
                )
            approval = await self._read(conn, approval_id)
            verb = "approve" if decision.status is ApprovalStatus.APPROVED else "deny"
            await append_entry(
                conn,
                tenant_id=approval.tenant_id,
                actor=decision.actor,
                action=f"approval.{verb}",
                object_type="approval",
                object_id=str(approval.id),
                detail=_detail(
                    approval,
                    arguments=approval.final_arguments,
                    edited=approval.edited,
                    reason=decision.reason,
                ),
            )
            return DecisionResult.DECIDED, approval

    async def sweep(self, limit: int = 100) -> int:
        async with translated(), self._engine.begin() as conn:
            due = (
                select(APPROVALS.c.id)
                .where(APPROVALS.c.status == PENDING, APPROVALS.c.expires_at <= func.now())
                .order_by(APPROVALS.c.expires_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            expired = list((await conn.execute(due)).scalars())
            # Pending approvals of runs that stopped waiting (cancelled): closed, not decided.
            orphaned = (
                select(APPROVALS.c.id)
                .select_from(_FROM)
                .where(
                    APPROVALS.c.status == PENDING,
                    RUNS.c.status != RunStatus.AWAITING_APPROVAL.value,
                )
                .limit(limit)
                .with_for_update(of=APPROVALS, skip_locked=True)
            )
            cancelled = list((await conn.execute(orphaned)).scalars())
            cancelled = [i for i in cancelled if i not in expired]
            if expired:
                await self._expire(conn, expired)
            if cancelled:
                await self._cancel(conn, cancelled)
            return len(expired) + len(cancelled)

    async def _read(self, conn: AsyncConnection, approval_id: uuid.UUID) -> Approval:
        stmt = select(*_COLUMNS).select_from(_FROM).where(APPROVALS.c.id == approval_id)
        return _approval((await conn.execute(stmt)).one())

    async def _expire(self, conn: AsyncConnection, ids: list[uuid.UUID]) -> None:
        """Close these (locked) approvals as expired and fail the runs still waiting on them."""
        closed = (
            update(APPROVALS)
            .where(APPROVALS.c.id.in_(ids))
            .values(
                status=ApprovalStatus.EXPIRED.value,
                decided_at=func.now(),
                decided_by=SWEEPER,
            )
            .returning(APPROVALS.c.id, APPROVALS.c.run_id, APPROVALS.c.step_number)
        )
        rows = (await conn.execute(closed)).all()
        for row in rows:
            outcome = RunOutcome.approval_expired(
                f"nobody decided the approval of step {row.step_number} in time"
            )
            await conn.execute(
                update(RUNS)
                .where(
                    RUNS.c.id == row.run_id,
                    RUNS.c.status == RunStatus.AWAITING_APPROVAL.value,
                )
                .values(
                    status=RunStatus.FAILED.value,
                    failure_code=outcome.failure_code,
                    failure_detail=outcome.failure_detail,
                    finished_at=func.now(),
                    worker_id=None,
                    lease_expires_at=None,
                )
            )
            approval = await self._read(conn, row.id)
            await append_entry(
                conn,
                tenant_id=approval.tenant_id,
                actor=SWEEPER,
                action="approval.expire",
                object_type="approval",
                object_id=str(approval.id),
                detail=_detail(approval, expires_at=approval.expires_at.isoformat()),
            )

    async def _cancel(self, conn: AsyncConnection, ids: list[uuid.UUID]) -> None:
        stmt = (
            update(APPROVALS)
            .where(APPROVALS.c.id.in_(ids))
            .values(
                status=ApprovalStatus.CANCELLED.value,
                decided_at=func.now(),
                decided_by=SWEEPER,
                decision_reason="its run ended before a decision",
            )
        )
        await conn.execute(stmt)
