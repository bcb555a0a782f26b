"""Governed actions: stored policies, human approvals, and the audit of governed steps."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from agent.domain import (
    JSON,
    Approval,
    ApprovalStatus,
    PolicyRecord,
    Step,
)

STATE_CHANGING_TOOLS = frozenset({"http_request", "send_email", "write_record"})
"""The tools whose execution changes data or reaches outside the appliance (a record write, an
email, a request): every completed step that runs one is audited, allowed or not. The one list
of them, for the run loop and the datastore's SQL alike; a test runs every tool and checks that
those whose run queued a side effect or wrote a record are exactly these. A new name here
changes the audit rule in SQL too, which needs a migration (`ix_steps_governed`)."""


class PolicyStore(Protocol):
    """Versioned policies (governed actions). Versions are only ever added."""

    async def apply(
        self,
        tenant_id: uuid.UUID,
        agent_name: str | None,
        *,
        source: str,
        document: JSON,
        sha256: str,
        actor: str,
    ) -> tuple[PolicyRecord, bool]:
        """Store the next version of the scope, audited in the same transaction; when the
        newest version already has this `sha256`, nothing is written. (record, created)."""
        ...

    async def active(self, tenant_id: uuid.UUID, agent_name: str | None) -> list[PolicyRecord]:
        """The newest tenant-wide version and, with `agent_name`, the agent's: 0 to 2 rows,
        in one query (the run loop asks once per claim)."""
        ...

    async def history(self, tenant_id: uuid.UUID, agent_name: str | None) -> list[PolicyRecord]:
        """Every version of exactly this scope (None = tenant-wide), newest first."""
        ...

    async def version(
        self, tenant_id: uuid.UUID, agent_name: str | None, version: int
    ) -> PolicyRecord | None: ...


class DecisionResult(StrEnum):
    DECIDED = "decided"
    ALREADY_DECIDED = "already_decided"
    EXPIRED = "expired"
    """It was past its expiry: it is now `expired` and its run `failed` (approval_expired)."""
    RUN_NOT_WAITING = "run_not_waiting"
    """Its run no longer waits (cancelled): it is now `cancelled`."""


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    status: ApprovalStatus
    """`approved` or `denied`."""
    actor: str
    reason: str | None
    final_arguments: JSON | None
    """What runs: the proposed arguments or an approver's (checked) edit; None when denied."""


class ApprovalStore(Protocol):
    async def get(
        self,
        approval_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        access_tags: tuple[str, ...] | None = None,
    ) -> Approval | None:
        """`tenant_id=None` is the operator's view (CLI); another tenant's id is None, and so,
        with `access_tags`, is the approval of a run that key may not see."""
        ...

    async def for_step(self, run_id: uuid.UUID, step_number: int) -> Approval | None: ...
    async def list_approvals(
        self,
        tenant_id: uuid.UUID | None,
        *,
        status: ApprovalStatus | None = None,
        run_id: uuid.UUID | None = None,
        limit: int = 50,
        access_tags: tuple[str, ...] | None = None,
    ) -> list[Approval]:
        """Newest first. A pending approval past its expiry reads as `expired` even before the
        sweep has failed its run. With `access_tags`, only those of runs that key may see."""
        ...

    async def decide(
        self, approval_id: uuid.UUID, tenant_id: uuid.UUID | None, decision: ApprovalDecision
    ) -> tuple[DecisionResult, Approval] | None:
        """Approve or deny a pending approval and queue its run again, audited, in one
        transaction; or say why not. None if there is no such approval (for this tenant)."""
        ...

    async def sweep(self, limit: int = 100) -> int:
        """Expire pending approvals past their time (their runs fail `approval_expired`) and
        cancel those whose run ended otherwise; how many approvals it closed."""
        ...


@dataclass(frozen=True, slots=True)
class UnauditedStep:
    """A committed step that may be owed an audit entry, with what its entry is built from."""

    step_id: int
    """The step's row id: the order the sweep walks steps in, and its watermark."""
    tenant_id: uuid.UUID
    step: Step
    effect_kinds: tuple[str, ...]
    """The kinds of the step's outbox effects, in call order (what the live path was handed)."""
    api_key_id: uuid.UUID | None = None
    """The key that submitted the step's run (`runs.api_key_id`), which its entry names."""


@dataclass(frozen=True, slots=True)
class SweepRange:
    """Steps (`through`, `mark_id`] are due for a sweep: every one committed at least the
    settling time ago. `steps` are those of them that lack an entry, oldest id first, at most
    the limit asked for."""

    through: int
    mark_id: int
    steps: tuple[UnauditedStep, ...]


@dataclass(frozen=True, slots=True)
class MissingEntry:
    run_id: uuid.UUID
    number: int
    tenant_id: uuid.UUID
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class MissingEntries:
    """Governed steps without their audit entry, over all steps (no watermark)."""

    count: int
    overdue: int
    """How many of them finished longer ago than the grace asked for: the sweep should have
    appended those already."""
    first: tuple[MissingEntry, ...]
    """The oldest few, by when their step finished."""


class StepAuditStore(Protocol):
    """What the audit sweep reads and where it keeps its place; appending is `AuditLog`'s."""

    async def due(self, limit: int, settle_s: float) -> SweepRange | None:
        """The range the sweep should examine now, or None when none has settled yet (one
        single-row read: the usual answer)."""
        ...

    async def advance(self, swept: SweepRange, complete: bool) -> None:
        """Record that `swept` was handled: all of it when `complete`, else up to its last
        step; and mark the next range. A no-op when another sweeper moved on meanwhile."""
        ...

    async def missing(self, sample: int, grace_s: float) -> MissingEntries:
        """Every governed step without an entry, counted, and the oldest `sample` of them."""
        ...
