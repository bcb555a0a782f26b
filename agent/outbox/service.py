"""Reading the outbox and putting a failed side effect back in line, for the CLI and the API.

Reads are tenant-scoped like every other read (`tenant_id=None` is the operator's view across
tenants, CLI only); a run that is not the caller's is not found, never an empty list. With a
restricted key's `access_tags`, so are the effects of runs it may not see
(`agent.services.access.sees_run`): their payloads come from what those runs read. A retry
is an operator's decision about something that failed for good, so the store audits it in the
retry's own transaction.
"""

from __future__ import annotations

import uuid

from agent.errors import CallerError, Conflict, NotFound
from agent.ports import OutboxItem, OutboxStatus, OutboxStore, RunStore


class OutboxService:
    def __init__(self, outbox: OutboxStore, runs: RunStore) -> None:
        self._outbox = outbox
        self._runs = runs

    async def list(
        self,
        tenant_id: uuid.UUID | None,
        *,
        run_id: uuid.UUID | None = None,
        status: OutboxStatus | None = None,
        limit: int = 100,
        access_tags: tuple[str, ...] | None = None,
    ) -> list[OutboxItem]:
        if not 1 <= limit <= 1000:
            raise CallerError("limit must be between 1 and 1000")
        if run_id is not None and await self._runs.get_run(run_id, tenant_id, access_tags) is None:
            raise NotFound(f"run {run_id} not found")
        return await self._outbox.list_items(
            tenant_id=tenant_id, run_id=run_id, status=status, limit=limit, access_tags=access_tags
        )

    async def retry(
        self,
        item_id: int,
        tenant_id: uuid.UUID | None,
        *,
        actor: str,
        access_tags: tuple[str, ...] | None = None,
    ) -> OutboxItem:
        """A failed row back to pending, due now, with a fresh set of attempts; another
        tenant's row, or one of a run a restricted key may not see, is not found, as on every
        read."""
        if tenant_id is not None or access_tags is not None:
            item = await self._outbox.get_item(item_id, tenant_id)
            if (
                item is None
                or await self._runs.get_run(item.run_id, tenant_id, access_tags) is None
            ):
                raise NotFound(f"outbox row {item_id} not found")
        item = await self._outbox.requeue(item_id, actor=actor)
        if item is None:
            current = await self._outbox.get_item(item_id, None)
            if current is None:
                raise NotFound(f"outbox row {item_id} not found")
            raise Conflict(
                f"outbox row {item_id} is {current.status}: only failed rows can be retried"
            )
        return item
