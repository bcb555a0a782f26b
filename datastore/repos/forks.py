"""Forking a run: a new queued run that starts with a copy of the parent's first N steps.

One transaction creates the run and copies the steps, so a fork either exists with all its
copied steps or not at all. The parent's outbox rows are not copied: their side effects already
happened (or will, for the parent), and a fork must never send them again. The copied steps keep
everything they recorded (context, decision, result, tokens, timings); only the run changes.
The fork is an operator's change and is audited in the same transaction.
"""

from __future__ import annotations

import uuid
from typing import cast

from sqlalchemy import Table, func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncEngine

from agent.domain import RunStatus
from agent.errors import Conflict
from datastore.errors import translated
from datastore.repos.audit import append_entry
from datastore.schema import RunRow, StepRow

RUNS = cast(Table, RunRow.__table__)
STEPS = cast(Table, StepRow.__table__)

# Every step column but the identity and the run it belongs to, so a column added to steps later
# is copied too.
_COPIED = [c for c in STEPS.c if c.name not in ("id", "run_id")]


class ForkRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def fork_run(
        self,
        parent_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        *,
        from_step: int,
        deployment: str | None,
        api_key_id: uuid.UUID | None,
        actor: str,
        access_tags: tuple[str, ...] | None = None,
    ) -> uuid.UUID | None:
        """The new run's id; None when the parent does not exist (for this tenant).

        Raises `Conflict` when the parent has fewer than `from_step` committed steps.
        """
        parent_query = select(RUNS).where(RUNS.c.id == parent_id)
        if tenant_id is not None:
            parent_query = parent_query.where(RUNS.c.tenant_id == tenant_id)
        # FOR SHARE: a worker still driving the parent waits for this short transaction, so the
        # step count read here and the steps copied below are the same committed steps.
        parent_query = parent_query.with_for_update(read=True)
        copied = (STEPS.c.run_id == parent_id) & (STEPS.c.number <= from_step)
        totals = select(
            func.coalesce(func.sum(STEPS.c.prompt_tokens), 0),
            func.coalesce(func.sum(STEPS.c.completion_tokens), 0),
        ).where(copied)
        fork_id = uuid.uuid4()
        async with translated(), self._engine.begin() as conn:
            parent = (await conn.execute(parent_query)).first()
            if parent is None:
                return None
            if not 0 <= from_step <= parent.step_count:
                raise Conflict(f"run {parent_id} has {parent.step_count} committed steps")
            prompt_tokens, completion_tokens = (await conn.execute(totals)).one()
            await conn.execute(
                insert(RUNS).values(
                    id=fork_id,
                    tenant_id=parent.tenant_id,
                    agent_id=parent.agent_id,
                    agent_name=parent.agent_name,
                    api_key_id=api_key_id,
                    access_tags=None if access_tags is None else list(access_tags),
                    input=parent.input,
                    status=RunStatus.QUEUED.value,
                    step_count=from_step,
                    attempts=0,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    parent_run_id=parent.id,
                    forked_from_step=from_step,
                    deployment=deployment,
                )
            )
            source = (
                select(literal(fork_id, STEPS.c.run_id.type), *_COPIED)
                .where(copied)
                .order_by(STEPS.c.number)
            )
            copy = insert(STEPS).from_select(["run_id", *(c.name for c in _COPIED)], source)
            numbers = (await conn.execute(copy.returning(STEPS.c.number))).scalars().all()
            if sorted(numbers) != list(range(1, from_step + 1)):
                # Committed steps are numbered 1..step_count without gaps; anything else is a
                # damaged ledger, and a fork of it must not exist (raising rolls it back).
                raise Conflict(f"run {parent_id} does not have all of steps 1..{from_step}")
            await append_entry(
                conn,
                tenant_id=parent.tenant_id,
                actor=actor,
                action="run.fork",
                object_type="run",
                object_id=str(fork_id),
                detail={"parent": str(parent.id), "from_step": from_step, "deployment": deployment},
            )
        return fork_id
