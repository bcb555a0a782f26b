"""Budgets: per run and per tenant/key/agent per UTC day, reserved before each model call.

- `budgets`: one rule per (scope, period); scope is `tenant:<uuid>`, `key:<uuid>` or
  `agent:<uuid>`, period `run` or `day`; NULL limits are unlimited; wall time per run only.
- `budget_usage`: a scope's counters for one UTC day (tokens used and reserved, steps, tool calls)
  with the limits they were last checked against; a reservation is one guarded upsert on it.
- `budget_reservations`: the tokens each model call in flight holds, with an expiry, so a worker
  that dies between reserving and settling does not hold them forever.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
UUID = pg.UUID(as_uuid=True)


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column(
            "tenant_id",
            UUID,
            sa.ForeignKey("tenants.id", ondelete="CASCADE", name="fk_budgets_tenant_id"),
            nullable=False,
        ),
        sa.Column("max_tokens", sa.BigInteger),
        sa.Column("max_steps", sa.BigInteger),
        sa.Column("max_tool_calls", sa.BigInteger),
        sa.Column("max_wall_s", sa.Double),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("scope", "period", name="pk_budgets"),
        sa.CheckConstraint("period IN ('run', 'day')", name="ck_budgets_period"),
        sa.CheckConstraint("period = 'run' OR max_wall_s IS NULL", name="ck_budgets_wall_per_run"),
    )
    op.create_index("ix_budgets_tenant_id", "budgets", ["tenant_id"])
    op.create_table(
        "budget_usage",
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("tokens_used", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("tokens_reserved", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("steps_used", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("tool_calls_used", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("token_limit", sa.BigInteger),
        sa.Column("step_limit", sa.BigInteger),
        sa.Column("tool_call_limit", sa.BigInteger),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("scope", "day", name="pk_budget_usage"),
    )
    op.create_table(
        "budget_reservations",
        sa.Column("id", UUID, nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        sa.Column("run_id", UUID, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", "scope", name="pk_budget_reservations"),
    )
    op.create_index("ix_budget_reservations_scope", "budget_reservations", ["scope", "expires_at"])


def downgrade() -> None:
    op.drop_table("budget_reservations")
    op.drop_table("budget_usage")
    op.drop_index("ix_budgets_tenant_id", table_name="budgets")
    op.drop_table("budgets")
