"""The narrow ports the run loop, the API and the CLI depend on.

`datastore` implements the stores, `serving` the models. Each Protocol has the few methods its
callers need and speaks only in `agent.domain` types, so the loop never sees a vendor schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from agent.domain import (
    JSON,
    AgentDefinition,
    ApiKey,
    Approval,
    ApprovalStatus,
    AuditEntry,
    ChunkHit,
    Document,
    DocumentWrite,
    ModelDeploymentRecord,
    ModelSync,
    NewDocument,
    OutboxEffect,
    PolicyRecord,
    Principal,
    Role,
    Run,
    RunOutcome,
    RunStatus,
    SearchQuery,
    SearchResult,
    Step,
    StoredChunk,
    Tenant,
)
from serving.types import ChatResult, EmbeddingResult, Message


class ChatModel(Protocol):
    async def chat(
        self,
        messages: Sequence[Message],
        *,
        json_schema: Mapping[str, Any] | None = None,
        schema_name: str = "action",
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> ChatResult: ...


class Embedder(Protocol):
    async def embed(self, texts: Sequence[str]) -> EmbeddingResult: ...


# Every change an administrator makes through these stores takes the `actor` it is audited
# under and appends the audit entry in the change's own transaction.


class TenantStore(Protocol):
    async def create_tenant(self, name: str, *, actor: str | None = None) -> Tenant: ...
    async def get_tenant(self, name: str) -> Tenant | None: ...
    async def list_tenants(self) -> list[Tenant]: ...


class KeyStore(Protocol):
    async def create_key(
        self,
        tenant_id: uuid.UUID,
        name: str,
        roles: Sequence[Role],
        key_hash: str,
        prefix: str,
        *,
        actor: str,
    ) -> ApiKey: ...
    async def authenticate(self, key_hash: str) -> Principal | None: ...
    async def list_keys(self, tenant_id: uuid.UUID | None = None) -> list[ApiKey]: ...
    async def revoke_key(self, key_id: uuid.UUID, *, actor: str) -> ApiKey | None: ...


class AgentStore(Protocol):
    async def put_agent(
        self,
        tenant_id: uuid.UUID,
        name: str,
        *,
        instructions: str,
        allowed_tools: Sequence[str],
        model_role: str,
        max_steps: int,
        retrieval_k: int,
        actor: str | None = None,
    ) -> AgentDefinition: ...
    async def get_agent(self, tenant_id: uuid.UUID, name: str) -> AgentDefinition | None: ...
    async def get_agent_by_id(self, agent_id: uuid.UUID) -> AgentDefinition | None: ...
    async def list_agents(self, tenant_id: uuid.UUID | None = None) -> list[AgentDefinition]: ...


class RunStore(Protocol):
    async def create_run(
        self, tenant_id: uuid.UUID, agent: AgentDefinition, input: str, api_key_id: uuid.UUID | None
    ) -> Run: ...
    async def get_run(self, run_id: uuid.UUID, tenant_id: uuid.UUID | None) -> Run | None:
        """`tenant_id=None` is the operator's view across tenants (CLI only)."""
        ...

    async def list_runs(
        self, tenant_id: uuid.UUID | None, status: RunStatus | None, limit: int
    ) -> list[Run]: ...
    async def list_steps(self, run_id: uuid.UUID, tenant_id: uuid.UUID | None) -> list[Step]: ...
    async def insert_keyed_run(
        self,
        tenant_id: uuid.UUID,
        agent: AgentDefinition,
        input: str,
        api_key_id: uuid.UUID | None,
        idempotency_key: str,
        request_hash: str,
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

    async def renew_lease(
        self, run_id: uuid.UUID, worker_id: str, lease_seconds: float
    ) -> bool: ...
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


class SearchStore(Protocol):
    async def search(self, query: SearchQuery) -> SearchResult:
        """The top `query.k` chunks of the tenant's documents matching the filter.

        Exactly `k` hits whenever at least `k` chunks are in scope; never a chunk of another
        tenant. With `query.text`, vector and keyword results are fused (reciprocal rank).
        """
        ...

    async def search_chunks(
        self, tenant_id: uuid.UUID, embedding: Sequence[float], k: int
    ) -> list[ChunkHit]:
        """Vector search without filters: `search` for callers that need only the hits."""
        ...


class DocumentStore(SearchStore, Protocol):
    async def find_documents(
        self, tenant_id: uuid.UUID, keys: Sequence[str]
    ) -> dict[str, Document]:
        """The stored documents under these keys (missing keys are absent from the result)."""
        ...

    async def write_documents(
        self, tenant_id: uuid.UUID, documents: Sequence[NewDocument]
    ) -> list[DocumentWrite]:
        """Store each document under its key in one transaction, in input order.

        A key already stored gets a new version whose chunks replace the old ones in the same
        commit, so a reader sees the old document or the new one, never a mix. The keys must be
        distinct within one call.
        """
        ...

    async def documents_after(
        self, tenant_id: uuid.UUID | None, after: uuid.UUID | None, limit: int
    ) -> list[Document]:
        """Up to `limit` documents in id order after `after`, of one tenant or (None) of all: a
        walk over every document that new and deleted ones cannot derail."""
        ...

    async def replace_embeddings(
        self, document: Document, embeddings: Mapping[int, Sequence[float]]
    ) -> bool:
        """Store new embeddings for the chunks of `document` (chunk id -> vector) in one commit.

        False, and nothing written, when the document's content is no longer the one they were
        computed from (it was replaced or deleted meanwhile).
        """
        ...

    async def get_document(
        self, document_id: uuid.UUID, tenant_id: uuid.UUID
    ) -> Document | None: ...
    async def list_documents(
        self, tenant_id: uuid.UUID, limit: int, offset: int = 0
    ) -> list[Document]: ...
    async def list_chunks(
        self, document_id: uuid.UUID, tenant_id: uuid.UUID, limit: int
    ) -> list[StoredChunk]: ...
    async def delete_document(
        self, document_id: uuid.UUID, tenant_id: uuid.UUID
    ) -> Document | None:
        """Delete a document and its chunks; the deleted document, or None if there was none."""
        ...

    async def count_chunks(self) -> int:
        """Chunks stored over all tenants (an estimate from statistics is fine)."""
        ...

    async def drop_vector_index(self) -> bool:
        """Drop the HNSW index before a bulk load; whether it existed."""
        ...

    async def build_vector_index(self, *, concurrently: bool = False) -> bool:
        """Build (or rebuild) the HNSW index and refresh statistics; whether it was missing."""
        ...


class AuditLog(Protocol):
    async def append(
        self,
        *,
        tenant_id: uuid.UUID | None,
        actor: str,
        action: str,
        object_type: str,
        object_id: str,
        detail: JSON,
    ) -> AuditEntry: ...
    async def list_entries(self, tenant_id: uuid.UUID | None, limit: int) -> list[AuditEntry]: ...


class ModelDeploymentStore(Protocol):
    async def sync(self, deployments: Sequence[ModelDeploymentRecord], *, actor: str) -> ModelSync:
        """Make the stored set exactly `deployments`, in one transaction, audited if it changed."""
        ...

    async def list_deployments(self) -> list[ModelDeploymentRecord]: ...


class HealthProbe(Protocol):
    async def ping(self) -> None: ...


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
    async def get(self, approval_id: uuid.UUID, tenant_id: uuid.UUID | None) -> Approval | None:
        """`tenant_id=None` is the operator's view (CLI); another tenant's id is None."""
        ...

    async def for_step(self, run_id: uuid.UUID, step_number: int) -> Approval | None: ...
    async def list_approvals(
        self,
        tenant_id: uuid.UUID | None,
        *,
        status: ApprovalStatus | None = None,
        run_id: uuid.UUID | None = None,
        limit: int = 50,
    ) -> list[Approval]:
        """Newest first. A pending approval past its expiry reads as `expired` even before the
        sweep has failed its run."""
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


class OutboxStatus(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    """Claimed by a dispatcher; claimable again once its lease runs out (the dispatcher died)."""
    DELIVERED = "delivered"
    FAILED = "failed"
    """Gave up (a permanent refusal, or `outbox_max_attempts`); an operator may requeue it."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One side effect in the outbox, as the dispatcher, the CLI and the API see it."""

    id: int
    tenant_id: uuid.UUID
    run_id: uuid.UUID
    step_number: int
    call_index: int
    idempotency_key: str
    kind: str
    """`email` or `http`."""
    payload: JSON
    status: OutboxStatus
    attempts: int
    """Deliveries started so far, including ones a dead dispatcher never finished."""
    next_attempt_at: datetime
    locked_by: str | None
    last_error: str | None
    response: JSON | None
    """What the receiver answered on the last attempt (HTTP status and body, SMTP refusals)."""
    created_at: datetime
    delivered_at: datetime | None


class OutboxStore(Protocol):
    async def claim_due(
        self, dispatcher_id: str, limit: int, lease_seconds: float, max_attempts: int
    ) -> list[OutboxItem]:
        """Lease up to `limit` due rows (pending and due, or delivering with an expired lease),
        counting an attempt for each; rows whose dispatcher died on the last allowed attempt
        are marked failed instead."""
        ...

    async def mark_delivered(self, item_id: int, dispatcher_id: str, response: JSON) -> bool:
        """False when the lease was lost (another dispatcher owns the row now)."""
        ...

    async def retry_later(
        self, item_id: int, dispatcher_id: str, error: str, response: JSON | None, delay_s: float
    ) -> bool: ...
    async def mark_failed(
        self, item_id: int, dispatcher_id: str, error: str, response: JSON | None
    ) -> bool: ...
    async def get_item(self, item_id: int, tenant_id: uuid.UUID | None) -> OutboxItem | None: ...
    async def list_items(
        self,
        *,
        tenant_id: uuid.UUID | None,
        run_id: uuid.UUID | None = None,
        status: OutboxStatus | None = None,
        limit: int = 100,
    ) -> list[OutboxItem]: ...
    async def requeue(self, item_id: int, *, actor: str) -> OutboxItem | None:
        """A failed row back to pending, due now, with its attempts reset; None if the row is
        not failed (or does not exist)."""
        ...


@dataclass(frozen=True, slots=True)
class SqlCatalog:
    """What `sql_query` may read: the views (with their columns) and functions of one schema."""

    schema: str
    views: Mapping[str, tuple[str, ...]]
    functions: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SqlLimits:
    timeout_s: float
    """Client-side deadline for connecting, running and fetching; the query is cancelled then."""
    max_rows: int
    max_bytes: int
    """Of the rows as JSON text; the rows that fit are returned and the cut is reported."""


@dataclass(frozen=True, slots=True)
class SqlRows:
    columns: tuple[str, ...]
    rows: list[list[Any]]
    """JSON values (numbers, text, booleans, null, objects, lists)."""
    truncated: str | None
    """`rows` or `bytes` when more rows were there than returned; None when they all fit."""
    elapsed_ms: float


@dataclass(frozen=True, slots=True)
class SqlFailure:
    code: str
    """`sql_timeout`, `sql_error` (Postgres refused or failed the query) or `sql_not_configured`
    (the tenant has no database role: the database user may not create roles)."""
    message: str


class TenantSql(Protocol):
    """Read-only SQL run as the tenant's own database role, never as the application's."""

    async def catalog(self) -> SqlCatalog: ...
    async def run(self, tenant_id: uuid.UUID, sql: str, limits: SqlLimits) -> SqlRows | SqlFailure:
        """Run one statement in a read-only transaction on a connection of its own."""
        ...


@dataclass(frozen=True, slots=True)
class StateRecord:
    """A typed piece of state an agent reads and writes through its contract."""

    tenant_id: uuid.UUID
    key: str
    type: str
    owner: str
    """Who created it (`run:<id>`, or a system such as `crm` that loads records)."""
    version: int
    """1 on creation, +1 on every write: a write names the version it was based on."""
    valid_until: datetime | None
    """After this a reader must treat the data as out of date; None: valid until changed."""
    data: JSON
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RecordRead:
    record: StateRecord | None
    seen_version: int | None
    """The version this run last read or wrote, from its own committed steps; None if never."""
    seen_valid_until: datetime | None
    """The validity of that copy: once passed, the run's copy is stale even if unchanged."""


class RecordStore(Protocol):
    async def read(self, tenant_id: uuid.UUID, key: str, run_id: uuid.UUID) -> RecordRead: ...
    async def write(
        self,
        tenant_id: uuid.UUID,
        key: str,
        *,
        type: str,
        owner: str,
        data: JSON,
        valid_until: datetime | None,
        expected_version: int,
    ) -> StateRecord | None:
        """Create (`expected_version` 0, the key must be free) or update the record at exactly
        `expected_version` (and of the same type). None, and nothing written, otherwise."""
        ...

    async def get(self, tenant_id: uuid.UUID, key: str) -> StateRecord | None: ...
