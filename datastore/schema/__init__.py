"""SQLAlchemy 2 typed table models, grouped by aggregate; migrations are hand-written from them."""

from datastore.schema.audit import AuditRow
from datastore.schema.base import Base
from datastore.schema.budgets import BudgetReservationRow, BudgetRow, BudgetUsageRow
from datastore.schema.documents import EMBEDDING_DIM, ChunkRow, DocumentRow
from datastore.schema.governance import ApprovalRow, PolicyRow
from datastore.schema.models import ModelDeploymentRow
from datastore.schema.runs import OutboxRow, RunEventRow, RunRow, StepRow
from datastore.schema.tenancy import AgentRow, ApiKeyRow, TenantRow

__all__ = [
    "EMBEDDING_DIM",
    "AgentRow",
    "ApiKeyRow",
    "ApprovalRow",
    "AuditRow",
    "Base",
    "BudgetReservationRow",
    "BudgetRow",
    "BudgetUsageRow",
    "ChunkRow",
    "DocumentRow",
    "ModelDeploymentRow",
    "OutboxRow",
    "PolicyRow",
    "RunEventRow",
    "RunRow",
    "StepRow",
    "TenantRow",
]
