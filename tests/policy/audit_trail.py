"""The audit log's step entries, as the step-audit tests read and break it: the entries per
step, the fields an entry was appended with, a log that loses every step append (as a worker
killed right after its step commit leaves it), and a sweep that does not wait for ranges to
settle."""

from __future__ import annotations

import uuid
from typing import Any

from agent.domain import AuditEntry
from agent.policy.audit_sweep import AuditSweep
from agent.policy.gate import Governance
from agent.ports import AuditLog
from agent.runtime import Services
from datastore.repos.audit_sweep import StepAuditRepository


class LostAppends:
    """The audit log as a worker killed right after its step commit leaves it: every step's
    append is lost. What the live path asked to append is kept, to compare with the sweep's."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log
        self.asked: list[dict[str, Any]] = []

    async def append(self, **entry: Any) -> AuditEntry:
        return await self._log.append(**entry)

    async def append_once(self, **entry: Any) -> AuditEntry | None:
        self.asked.append(entry)
        raise ConnectionResetError("the worker died before appending")

    async def list_entries(self, tenant_id: uuid.UUID | None, limit: int) -> list[AuditEntry]:
        return await self._log.list_entries(tenant_id, limit)


def lose_step_appends(services: Services) -> LostAppends:
    """From now on the run loop's step appends are lost (policies and approvals still work)."""
    lost = LostAppends(services.store.audit)
    s = services.store
    services.governance = Governance(s.policies, s.approvals, lost, services.settings.governance)
    return lost


def sweeper(services: Services, limit: int = 200) -> AuditSweep:
    """A sweep that does not wait for ranges to settle, so a test need not wait either."""
    return AuditSweep(
        StepAuditRepository(services.store.engine), services.store.audit, settle_s=0, limit=limit
    )


async def step_entries(services: Services) -> dict[str, list[AuditEntry]]:
    found: dict[str, list[AuditEntry]] = {}
    for entry in await services.store.audit.list_entries(None, 10_000):
        if entry.object_type == "step":
            found.setdefault(entry.object_id, []).append(entry)
    return found


def appended_with(entry: AuditEntry) -> dict[str, Any]:
    """The entry's fields as the live path passes them to `append_once` (`LostAppends.asked`)."""
    return {
        "tenant_id": entry.tenant_id,
        "actor": entry.actor,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "detail": entry.detail,
    }
