"""Governed actions: versioned policies and approvals.

- `policies`: every applied version of a tenant's policy file (`agent_name` NULL) or of one of
  its agents' (`agent_name` set). Rows are only ever inserted; the newest version of a scope is
  the one that applies. The source text is kept byte for byte beside its validated JSON.
- `approvals`: one per action a policy sent to a person. Inserted by the step commit that parks
  its run in `awaiting_approval` (same statement), decided (approved, denied, expired,
  cancelled) once. `final_arguments` holds what was approved, edited or not; the partial index
  on `expires_at` keeps the expiry sweep to the pending rows.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
UUID = pg.UUID(as_uuid=True)
APPROVAL_STATUSES = ("pending", "approved", "denied", "expired", "cancelled")


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("tenant_id", UUID, sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("agent_name", sa.String(64)),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("document", pg.JSONB, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("applied_by", sa.String(200), nullable=False),
        sa.Column("applied_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("version >= 1", name="version_positive"),
    )
    # One row per version of a scope; the expression makes the tenant-wide scope (NULL) a
    # value like any other, on every Postgres version.
    op.create_index(
        "uq_policies_scope_version",
        "policies",
        ["tenant_id", sa.text("coalesce(agent_name, '')"), "version"],
        unique=True,
    )

    op.create_table(
        "approvals",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("tenant_id", UUID, sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("run_id", UUID, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("step_number", sa.Integer, nullable=False),
        sa.Column("tool", sa.String(64), nullable=False),
        sa.Column("arguments", pg.JSONB, nullable=False),
        sa.Column("rule", sa.String(200)),
        sa.Column("reason", sa.Text),
        sa.Column("policy", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("provenance", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("decided_at", TS),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("decision_reason", sa.Text),
        sa.Column("final_arguments", pg.JSONB),
        sa.UniqueConstraint("run_id", "step_number"),
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in APPROVAL_STATUSES) + ")",
            name="status_known",
        ),
    )
    op.create_index("ix_approvals_tenant_created", "approvals", ["tenant_id", "created_at"])
    op.create_index(
        "ix_approvals_pending_expiry",
        "approvals",
        ["expires_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_table("approvals")
    op.drop_table("policies")
