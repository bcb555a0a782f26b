"""The audit sweep: appends the entries of governed steps whose live append was lost.

A step's entry is appended right after the step commits, outside the commit (the commit is the
loop's hot path, one statement). A worker killed in between, or an append that fails, leaves the
step without its entry. Workers run this sweep between claims (`agent.worker.Sweep`), so every
governed step gets its entry at least once; `AuditLog.append_once` makes a second append of a
step a no-op, so it is exactly once, whichever of the live path and the sweep comes first.

The sweep examines steps in ranges that have settled (`datastore.repos.audit_sweep` explains
the watermark): a sweep with nothing due costs one single-row read, so it can run every few
seconds. Within a range it appends in the order the steps finished. `missing` is the full check
`garrison audit verify` reports, over every step, independent of the watermark.
"""

from __future__ import annotations

from datetime import datetime

from agent.policy import step_audit
from agent.policy.gate import is_gated
from agent.ports import AuditLog
from agent.ports.governance import MissingEntries, StepAuditStore, UnauditedStep

SWEEP_INTERVAL_S = 10.0
"""How often a worker looks for a settled range (one single-row read when none is due)."""
SETTLE_S = 30.0
"""A range is swept this long after its last step id was noted: every step in it has long
committed, and the live path has long appended its entry (it does milliseconds after)."""
SWEEP_LIMIT = 200
"""Entries appended per sweep at most; the rest wait for the next (each append takes the audit
log's lock, which every other append waits for)."""
MISSING_GRACE_S = 300.0
"""`verify` counts a missing entry as overdue (a failure) once its step finished this long ago:
by then a running worker's sweep would have appended it (settling time plus an interval, with
room to spare). Newer ones are reported as pending."""
RANGES_PER_SWEEP = 2
"""A range that completes may let the next one be examined in the same sweep, if it has
settled too (with a settling time of zero, as tests use); never more than this."""


class AuditSweep:
    def __init__(
        self,
        store: StepAuditStore,
        audit: AuditLog,
        *,
        limit: int = SWEEP_LIMIT,
        settle_s: float = SETTLE_S,
    ) -> None:
        self._store = store
        self._audit = audit
        self._limit = limit
        self._settle_s = settle_s

    async def sweep(self) -> int:
        """Append the entries settled governed steps lack; how many it appended."""
        appended = 0
        for _ in range(RANGES_PER_SWEEP):
            budget = self._limit - appended
            due = await self._store.due(budget, self._settle_s) if budget > 0 else None
            if due is None:
                break
            for unaudited in sorted(due.steps, key=_finished):
                appended += await self._append(unaudited)
            # Fewer than asked for: nothing else is missing in the range, so it is done;
            # otherwise the next sweep goes on after the last step handled here.
            complete = len(due.steps) < budget
            await self._store.advance(due, complete)
            if not complete:
                break
        return appended

    async def missing(self, sample: int = 5, grace_s: float = MISSING_GRACE_S) -> MissingEntries:
        return await self._store.missing(sample, grace_s)

    async def _append(self, unaudited: UnauditedStep) -> int:
        step, kinds = unaudited.step, unaudited.effect_kinds
        # The query selects by the same rule in SQL; this one is the reference.
        if not step_audit.audited(step, kinds):
            return 0
        entry = step_audit.step_entry(
            unaudited.tenant_id, step, kinds, gated=is_gated(step), api_key_id=unaudited.api_key_id
        )
        return 0 if await step_audit.append(self._audit, entry) is None else 1


def _finished(unaudited: UnauditedStep) -> tuple[datetime, int]:
    return (unaudited.step.finished_at, unaudited.step_id)
