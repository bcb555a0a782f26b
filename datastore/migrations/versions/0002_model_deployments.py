"""Model deployments: the registry as last synced by `garrison models sync` or `garrison up`.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_deployments",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("spec", pg.JSONB, nullable=False),
        sa.Column("roles", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("placement_kind", sa.String(16), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_table("model_deployments")
