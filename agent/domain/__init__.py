"""Plain domain types shared by the run loop, the API, the CLI and the datastore.

Only frozen dataclasses and enums live here: no I/O, no framework types. The datastore maps its
rows onto these, so nothing above it ever sees a SQLAlchemy object.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from agent import codes
from agent.domain.documents import (
    ChunkHit as ChunkHit,
)
from agent.domain.documents import (
    Document as Document,
)
from agent.domain.documents import (
    DocumentWrite as DocumentWrite,
)
from agent.domain.documents import (
    EfMeasure as EfMeasure,
)
from agent.domain.documents import (
    NewChunk as NewChunk,
)
from agent.domain.documents import (
    NewDocument as NewDocument,
)
from agent.domain.documents import (
    SearchCalibration as SearchCalibration,
)
from agent.domain.documents import (
    SearchFilter as SearchFilter,
)
from agent.domain.documents import (
    SearchPlan as SearchPlan,
)
from agent.domain.documents import (
    SearchQuery as SearchQuery,
)
from agent.domain.documents import (
    SearchResult as SearchResult,
)
from agent.domain.documents import (
    StoredChunk as StoredChunk,
)
from agent.domain.documents import (
    WriteStatus as WriteStatus,
)
from agent.domain.tenancy import (
    ApiKey as ApiKey,
)
from agent.domain.tenancy import (
    Principal as Principal,
)
from agent.domain.tenancy import (
    Role as Role,
)
from agent.domain.tenancy import (
    Tenant as Tenant,
)
from agent.domain.types import JSON as JSON
from agent.errors import IllegalTransition


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    """Parked on a pending human approval; no worker holds it (governed actions)."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXHAUSTED = "budget_exhausted"
    PARKED = "parked"
    """Its worker died on every one of `max_run_attempts` attempts: an operator decides
    (`garrison runs resume|cancel`)."""

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.BUDGET_EXHAUSTED}
)

# The one place that says which run transitions are legal. Everything that changes a run's status
# goes through `check_transition`, so an illegal move is a bug caught at the edge (a 409 at the
# API), not a silent overwrite in SQL.
ALLOWED_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset(
        {
            RunStatus.RUNNING,  # an expired lease claimed by another worker
            RunStatus.AWAITING_APPROVAL,
            RunStatus.SUCCEEDED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.BUDGET_EXHAUSTED,
            RunStatus.PARKED,
        }
    ),
    RunStatus.AWAITING_APPROVAL: frozenset(
        {RunStatus.QUEUED, RunStatus.FAILED, RunStatus.CANCELLED}
    ),
    RunStatus.PARKED: frozenset({RunStatus.QUEUED, RunStatus.CANCELLED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
    RunStatus.BUDGET_EXHAUSTED: frozenset(),
}


class StepStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AgentDefinition:
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    instructions: str
    allowed_tools: tuple[str, ...]
    model_role: str
    max_steps: int
    """Hard ceiling on loop iterations; the run fails with `step_limit_exceeded` past it."""
    retrieval_k: int
    """How many chunks are retrieved for the task before the first decision."""
    version: int
    created_at: datetime
    parallel_calls: int = 1
    """Tool calls the model may propose in one decision; more than one lets several actions of
    one run wait for approval side by side (`agent.decision`)."""


@dataclass(frozen=True, slots=True)
class Run:
    id: uuid.UUID
    tenant_id: uuid.UUID
    agent_id: uuid.UUID
    agent_name: str
    input: str
    status: RunStatus
    output: str | None
    failure_code: str | None
    failure_detail: str | None
    step_count: int
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    idempotency_key: str | None = None
    cancel_requested_at: datetime | None = None
    """Set by a cancel of a running run; the run ends `cancelled` at its next step boundary."""
    parent_run_id: uuid.UUID | None = None
    """The run this one was forked from."""
    forked_from_step: int | None = None
    """Steps 1..N were copied from the parent; the rest ran live."""
    deployment: str | None = None
    """The deployment every decision of this run is pinned to; None routes by the agent's role."""
    api_key_id: uuid.UUID | None = None
    """The API key that submitted the run (None: the CLI or a system); its audit entries name it."""
    access_tags: tuple[str, ...] | None = None
    """The submitting key's access tags, snapshotted at submission: the run's searches see only
    documents carrying one of them (none at all when empty); None: the whole tenant."""


@dataclass(frozen=True, slots=True)
class OutboxEffect:
    """A side effect a tool asks for. It is written to the outbox in the step's own transaction
    and delivered by the dispatcher afterwards, so nothing leaves for a step that never committed.
    """

    kind: str
    """`email` or `http`."""
    payload: JSON


def effect_key(run_id: uuid.UUID, step_number: int, call_index: int) -> str:
    """The idempotency key of a step's n-th side effect: the same on every retry of the step."""
    return f"{run_id}:{step_number}:{call_index}"


@dataclass(frozen=True, slots=True)
class Step:
    """Everything one loop iteration saw and did, as committed."""

    run_id: uuid.UUID
    number: int
    status: StepStatus
    context: JSON
    """What the model was shown: prompt hash, sizes, retrieved chunk references."""
    decision: JSON
    """The model exchange: every attempt's raw output, validation errors, and the parsed action."""
    tool: str | None
    arguments: JSON | None
    result: JSON | None
    error_code: str | None
    prompt_tokens: int
    completion_tokens: int
    model_ms: float
    tool_ms: float
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a committed step changes its run. `status=None` keeps the run running."""

    status: RunStatus | None = None
    output: str | None = None
    failure_code: str | None = None
    failure_detail: str | None = None

    @classmethod
    def cancelled(cls, detail: str) -> RunOutcome:
        """How a cancel ends a run, whoever applies it (the API, a claim, a step commit)."""
        return cls(RunStatus.CANCELLED, failure_code=codes.CANCELLED, failure_detail=detail)

    @classmethod
    def parked(cls, detail: str) -> RunOutcome:
        """How a run whose worker keeps dying is set aside for an operator."""
        return cls(RunStatus.PARKED, failure_code=codes.WORKER_LOST, failure_detail=detail)

    @classmethod
    def approval_expired(cls, detail: str) -> RunOutcome:
        """How a run ends when nobody decided its pending approval in time."""
        return cls(RunStatus.FAILED, failure_code=codes.APPROVAL_EXPIRED, failure_detail=detail)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    tenant_id: uuid.UUID | None
    actor: str
    action: str
    object_type: str
    object_id: str
    detail: JSON = field(default_factory=dict)
    created_at: datetime | None = None
    hash: str = ""
    prev_hash: str = ""
    """The hash of the entry before it (all zeros for the first): the link the chain checks."""


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first audit entry at which the hash chain does not hold."""

    entry_id: int
    code: str
    """`audit_entry_altered` (its content no longer matches its hash), `audit_chain_broken`
    (it does not follow the entry before it: one was deleted or rewritten), or
    `audit_anchor_mismatch` (an entry the caller noted down has another hash now)."""
    message: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What `garrison audit verify` found after recomputing the whole chain."""

    checked: int
    """Entries recomputed (up to and including a break)."""
    head_id: int | None
    """The last entry checked; note it with `head_hash` to catch a later rewrite or
    truncation (`--anchor`)."""
    head_hash: str | None
    broken: ChainBreak | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None


def check_transition(current: RunStatus, new: RunStatus) -> None:
    """Raise `IllegalTransition` unless `current -> new` is in `ALLOWED_TRANSITIONS`."""
    if new not in ALLOWED_TRANSITIONS[current]:
        raise IllegalTransition(f"a run cannot go from {current} to {new}")


@dataclass(frozen=True, slots=True)
class ModelDeploymentRecord:
    """A registry deployment as stored: its validated spec as JSON, plus what is queried."""

    name: str
    spec: JSON
    roles: tuple[str, ...]
    placement_kind: str
    updated_at: datetime | None = None
    """When the stored spec last changed; None before it is stored."""


@dataclass(frozen=True, slots=True)
class ModelSync:
    """What one registry sync changed, by deployment name."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    """One applied version of a tenant's policy file, or of one of its agents' (governed
    actions: `agent.policy`). Versions are never changed or deleted; the newest one applies."""

    id: int
    tenant_id: uuid.UUID
    agent_name: str | None
    """None: the tenant-wide policy; a name: that agent's, applied on top of the tenant's."""
    version: int
    """1, 2, ... per tenant and scope."""
    source: str
    """The file as applied, byte for byte (what `policies show` and `diff` print)."""
    document: JSON
    """The validated content `source` parsed to."""
    sha256: str
    applied_by: str
    applied_at: datetime


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    """Its run ended another way (it was cancelled) before anyone decided."""


@dataclass(frozen=True, slots=True)
class Approval:
    """A proposed action waiting for a person, or what the person decided about it."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    run_id: uuid.UUID
    agent_name: str
    step_number: int
    """The step that proposed the action; the action runs (or is refused) in the next one."""
    tool: str
    arguments: JSON
    """As the model proposed them."""
    rule: str | None
    reason: str | None
    """Why a person must decide: the policy rule and its reason."""
    policy: JSON
    """The verdict as recorded on the step, with the policy version that gave it."""
    provenance: list[JSON]
    """Arguments that came from untrusted content, and from where."""
    status: ApprovalStatus
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    final_arguments: JSON | None = None
    """What was approved: the proposed arguments, or the approver's edit of them."""

    @property
    def edited(self) -> bool:
        return self.final_arguments is not None and self.final_arguments != self.arguments
