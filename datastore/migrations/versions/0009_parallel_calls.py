"""Parallel tool calls: how many tool calls an agent's model may propose in one decision.

`agents.parallel_calls` is 1 for every existing agent (one call per decision, as before), so the
decision schema the model is constrained to does not change unless an operator raises it. With
more than one, one decision may propose several calls at once, and several of them may wait for
approval side by side (`agent.loop`, `agent.policy.gate`).

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "agents",
        sa.Column("parallel_calls", sa.Integer, nullable=False, server_default="1"),
    )
    op.create_check_constraint(
        "ck_agents_parallel_calls", "agents", "parallel_calls BETWEEN 1 AND 8"
    )


def downgrade() -> None:
    op.drop_constraint("ck_agents_parallel_calls", "agents", type_="check")
    op.drop_column("agents", "parallel_calls")
