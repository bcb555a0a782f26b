"""The narrow ports the run loop, the API and the CLI depend on.

`datastore` implements the stores, `serving` the models. Each Protocol has the few methods its
callers need and speaks only in `agent.domain` types, so the loop never sees a vendor schema.
"""

from agent.ports.documents import DocumentStore, SearchStore
from agent.ports.governance import ApprovalDecision, ApprovalStore, DecisionResult, PolicyStore
from agent.ports.models import ChatModel, Embedder, HealthProbe, ModelDeploymentStore
from agent.ports.outbox import OutboxItem, OutboxStatus, OutboxStore
from agent.ports.records import (
    RecordRead,
    RecordStore,
    SqlCatalog,
    SqlFailure,
    SqlLimits,
    SqlRows,
    StateRecord,
    TenantSql,
)
from agent.ports.runs import RunStore
from agent.ports.tenancy import AgentStore, AuditLog, KeyStore, TenantStore

__all__ = [
    "AgentStore",
    "ApprovalDecision",
    "ApprovalStore",
    "AuditLog",
    "ChatModel",
    "DecisionResult",
    "DocumentStore",
    "Embedder",
    "HealthProbe",
    "KeyStore",
    "ModelDeploymentStore",
    "OutboxItem",
    "OutboxStatus",
    "OutboxStore",
    "PolicyStore",
    "RecordRead",
    "RecordStore",
    "RunStore",
    "SearchStore",
    "SqlCatalog",
    "SqlFailure",
    "SqlLimits",
    "SqlRows",
    "StateRecord",
    "TenantSql",
    "TenantStore",
]
