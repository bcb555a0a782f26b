"""Policies (versioned, per tenant/agent) and approvals.

(Placeholder in the chain until its owner fills it in: upgrades and downgrades nothing yet.)

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
