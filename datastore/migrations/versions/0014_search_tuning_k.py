"""The k a tenant's `ef_search` was calibrated at (`search_tuning.k`).

Recall of an HNSW scan depends on how many candidates it keeps per row asked for, not on
`ef_search` alone: a value measured for the top 10 keeps too few for the top 50. Searches scale
the calibrated value by the rows they ask for against this k (`datastore.repos.search_tuning.
ef_for_rows`). Every calibration so far measured recall@10, hence the default.

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("search_tuning", sa.Column("k", sa.Integer, nullable=False, server_default="10"))
    op.create_check_constraint("ck_search_tuning_k", "search_tuning", "k BETWEEN 1 AND 1000")


def downgrade() -> None:
    op.drop_constraint("ck_search_tuning_k", "search_tuning", type_="check")
    op.drop_column("search_tuning", "k")
