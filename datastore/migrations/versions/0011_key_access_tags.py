"""Access tags on API keys, and the scope each run was submitted with.

A document's tags were only search filters: any key of a tenant saw every document of it. From
this revision a key may carry access tags, and then sees only the documents carrying at least
one of them (`agent.services.access`):

- `api_keys.access_tags`: NULL = the whole tenant, as every key before this revision. A
  restricted key names at least one tag (`ck_api_keys_access_tags`): an empty array would be a
  key that sees nothing, which is a revoked key by another name.
- `runs.access_tags`: the submitting key's tags as they were when the run was submitted (NULL =
  the whole tenant). A run searches under this snapshot, not under the key's tags read again at
  each step: replay and the audit trail see the scope the run really had, and a key changed or
  revoked while the run is in flight does not change what the run already retrieved against.
  A fork keeps its parent's scope.

Both columns are nullable without a default, so adding them rewrites no table: every existing
key and run reads as NULL, which is what it was.

Downgrading drops the columns, which would silently widen every restricted key to its whole
tenant, and let a queued run carrying a scope be driven without it by older code. It is
refused while any unrevoked key is restricted or any unfinished run carries a scope: revoke
those keys (and let such runs finish or cancel them) first.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from datastore.errors import MigrationError

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("access_tags", postgresql.ARRAY(sa.Text)))
    op.create_check_constraint(
        "ck_api_keys_access_tags", "api_keys", "access_tags IS NULL OR cardinality(access_tags) > 0"
    )
    op.add_column("runs", sa.Column("access_tags", postgresql.ARRAY(sa.Text)))


def downgrade() -> None:
    conn = op.get_bind()
    keys = conn.execute(
        sa.text(
            "SELECT count(*) FROM api_keys WHERE access_tags IS NOT NULL AND revoked_at IS NULL"
        )
    ).scalar_one()
    runs = conn.execute(
        sa.text(
            # The statuses of this revision in which a worker may still drive a run.
            "SELECT count(*) FROM runs WHERE access_tags IS NOT NULL "
            "AND status IN ('queued', 'running', 'awaiting_approval', 'parked')"
        )
    ).scalar_one()
    if keys or runs:
        raise MigrationError(
            f"refusing to drop access tags: {keys} unrevoked API keys are restricted by them and "
            f"{runs} unfinished runs carry them; without the columns they would see every "
            "document of their tenant. Revoke those keys and let those runs end first."
        )
    op.drop_column("runs", "access_tags")
    op.drop_constraint("ck_api_keys_access_tags", "api_keys", type_="check")
    op.drop_column("api_keys", "access_tags")
