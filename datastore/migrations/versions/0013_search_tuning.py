"""Each tenant's calibrated HNSW `ef_search` (`datastore.repos.search_tuning`).

One row per tenant that was measured: the `ef_search` its searches use, the recall@10 measured
there against an exact scan, the target, how many queries were measured and what they were
(`questions` or `mixed chunks`), how many chunks the tenant had (so a worker measures again when
the count drifts), and every value tried as JSON
(`[{"ef_search", "recall", "p50_ms"}, ...]`). A tenant without a row searches with the default
(`datastore.driver.HNSW_EF_SEARCH`), as every tenant did before this revision.

The vector index's build parameters become m = 24, ef_construction = 128 (pgvector's defaults,
16 and 64, before): `datastore.schema.documents.HNSW_M`. Only its options change here, which is
instant: the graph already built keeps the m it was built with (pgvector reads it from the
index's own metapage, so inserts stay consistent with it), and the new parameters take effect at
the next build, `garrison reindex` or a bulk load. Rebuilding 100k chunks takes about a minute
on 2 cores; a migration must not hold the upgrade for that, so the operator chooses when.

Downgrading drops the table, so searches return to the default `ef_search`, and resets the
index's options to pgvector's defaults (again for the next build).

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

# This revision's values, not imports: a later change of the constants must not rewrite it.
HNSW_INDEX = "ix_chunks_embedding_hnsw"
HNSW_M = 24
HNSW_EF = 128


def upgrade() -> None:
    op.create_table(
        "search_tuning",
        sa.Column(
            "tenant_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("tenants.id", ondelete="CASCADE", name="fk_search_tuning_tenant_id"),
            primary_key=True,
        ),
        sa.Column("ef_search", sa.Integer, nullable=False),
        sa.Column("recall", sa.Double, nullable=False),
        sa.Column("target", sa.Double, nullable=False),
        sa.Column("sample", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("chunks", sa.BigInteger, nullable=False),
        sa.Column("ladder", pg.JSONB, nullable=False),
        sa.Column(
            "measured_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        # pgvector accepts 1..1000 for hnsw.ef_search; a value outside would fail every search.
        sa.CheckConstraint("ef_search BETWEEN 1 AND 1000", name="ck_search_tuning_ef_search"),
    )

    op.execute(
        f"ALTER INDEX IF EXISTS {HNSW_INDEX} SET (m = {HNSW_M}, ef_construction = {HNSW_EF})"
    )


def downgrade() -> None:
    op.execute(f"ALTER INDEX IF EXISTS {HNSW_INDEX} RESET (m, ef_construction)")
    op.drop_table("search_tuning")
