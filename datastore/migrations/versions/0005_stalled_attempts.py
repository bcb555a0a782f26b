"""Parking counts lost workers since the run's last committed step, not claims over its life.

`runs.attempts` keeps counting every claim (what an operator reads); `stalled_attempts` counts
claims since the last committed step and is what parks a run. A long run whose workers are
killed now and then, but which makes progress each time, is never parked; a run that kills its
worker at the same step every time is.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "runs",
        sa.Column("stalled_attempts", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("runs", "stalled_attempts")
