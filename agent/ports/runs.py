"""The run ledger as the loop, the worker and the API use it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from agent.domain import (
    AgentDefinition,
    OutboxEffect,
    Run,
    RunOutcome,
    RunStatus,
    Step,
)


class RunStore(Protocol):
    async def create_run(
        self,
        tenant_id: uuid.UUID,
        agent: AgentDefinition,
        input: str,
        api_key_id: uuid.UUID | None,
        access_tags: tuple[str, ...] | None = None,
    ) -> Run:
        """Queue a run; `access_tags` is the submitting key's scope, kept with the run."""
        ...

    async def get_run(
        self,
        run_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        access_tags: tuple[str, ...] | None = None,
    ) -> Run | None:
        """`tenant_id=None` is the operator's view across tenants (CLI only). With
        `access_tags` (a restricted key's), None also for a run that key may not see
        (`agent.services.access.sees_run`)."""
        ...

    async def list_runs(
        self,
        tenant_id: uuid.UUID | None,
        status: RunStatus | None,
        limit: int,
        access_tags: tuple[str, ...] | None = None,
    ) -> list[Run]:
        """Newest first; with `access_tags`, only the runs that key may see."""
        ...

    async def list_steps(self, run_id: uuid.UUID, tenant_id: uuid.UUID | None) -> list[Step]: ...
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
        """Queue a run under an idempotency key; None (nothing written) if the tenant already
        has a run with that key. Race-safe: concurrent inserts of one key leave one run."""
        ...

    async def get_keyed_run(
        self, tenant_id: uuid.UUID, idempotency_key: str
    ) -> tuple[Run, str | None] | None:
        """The tenant's run holding this key, with the request hash stored beside it."""
        ...

    async def claim_next(
        self, worker_id: str, lease_seconds: float, max_attempts: int | None = None
    ) -> Run | None:
        """Take one claimable run (queued, or running with an expired lease) and lease it.

        The run comes back without a lease, not running, when the claim ends it instead: a
        cancel was requested (`cancelled`), or its workers died `max_attempts` times (`parked`).
        """
        ...

    async def renew_leases(
        self, worker_id: str, run_ids: Sequence[uuid.UUID], lease_seconds: float
    ) -> set[uuid.UUID]:
        """Renew every lease in `run_ids` in one statement; the runs still this worker's."""
        ...

    async def release_lease(self, run_id: uuid.UUID, worker_id: str) -> None:
        """Let another worker resume the run at once (graceful stop between steps)."""
        ...

    async def record_step(
        self,
        step: Step,
        worker_id: str,
        outcome: RunOutcome,
        effects: Sequence[OutboxEffect] = (),
    ) -> Run:
        """Commit a step, its effect on the run and its side effects' outbox rows in one
        transaction.

        Raises `LeaseLost` when the worker no longer owns the run or the step number is not the
        next one: nothing is written then.
        """
        ...

    async def record_steps(
        self,
        steps: Sequence[tuple[Step, Sequence[OutboxEffect]]],
        worker_id: str,
        outcome: RunOutcome,
    ) -> Run:
        """Commit a turn of consecutive steps (parallel calls) with their side effects, and
        `outcome` on the run, all or nothing, under the same guard as `record_step`."""
        ...

    async def finish_without_step(
        self, run_id: uuid.UUID, worker_id: str, outcome: RunOutcome
    ) -> Run:
        """End a run for a reason found before any step could run (its agent was deleted)."""
        ...

    async def cancel_run(
        self, run_id: uuid.UUID, tenant_id: uuid.UUID | None, *, actor: str
    ) -> Run | None:
        """Cancel now if no worker drives the run, else request it for the next step boundary.

        None if there is no such run; `IllegalTransition` if it already ended.
        """
        ...

    async def resume_run(
        self, run_id: uuid.UUID, tenant_id: uuid.UUID | None, *, actor: str
    ) -> Run | None:
        """Queue a parked run again with its attempts reset; `IllegalTransition` otherwise."""
        ...
