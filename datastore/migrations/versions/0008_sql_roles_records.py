"""sql_query: per-tenant LOGIN roles, row-level security, allow-listed views; state records.

(Placeholder in the chain until its owner fills it in: upgrades and downgrades nothing yet.)

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
