"""Documents by key with versions and access tags; keyword search over chunks.

A document is now identified by (tenant, key) — an explicit external key, else its source, else
its content hash — so re-ingesting a changed file replaces it (a new version) instead of adding a
second document. Chunks keep the section heading they came from and a generated `tsvector` with a
GIN index for the keyword half of hybrid search. Metadata and tags get GIN indexes because search
filters resolve against documents before chunks are ranked.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("documents", sa.Column("key", sa.Text))
    # Existing rows: the newest document per source keeps the source as its key; any older one
    # with the same source (the old schema allowed that), or a source too long for the unique
    # index, is keyed by its content hash, which the old unique constraint kept unique per tenant.
    op.execute(
        """
        UPDATE documents d SET key = CASE
            WHEN ranked.source IS NOT NULL AND ranked.n = 1
                 AND octet_length(ranked.source) <= 2000 THEN ranked.source
            ELSE 'sha256:' || ranked.content_hash END
        FROM (
            SELECT id, source, content_hash,
                   row_number() OVER (PARTITION BY tenant_id, source ORDER BY created_at DESC) AS n
            FROM documents
        ) ranked
        WHERE ranked.id = d.id
        """
    )
    op.alter_column("documents", "key", nullable=False)
    op.add_column("documents", sa.Column("version", sa.Integer, nullable=False, server_default="1"))
    op.add_column(
        "documents",
        sa.Column("tags", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
    )
    op.add_column(
        "documents",
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.drop_constraint("uq_documents_tenant_id", "documents", type_="unique")
    op.create_unique_constraint("uq_documents_tenant_key", "documents", ["tenant_id", "key"])
    op.create_index(
        "ix_documents_metadata",
        "documents",
        ["metadata"],
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
    )
    op.create_index("ix_documents_tags", "documents", ["tags"], postgresql_using="gin")

    op.add_column("chunks", sa.Column("heading", sa.Text, nullable=False, server_default=""))
    # 'english' stems words for natural-language queries; codes such as "XK-4471-B" still come
    # out whole (and in parts), because the parser, not the dictionary, splits them.
    op.execute(
        """
        ALTER TABLE chunks ADD COLUMN tsv tsvector GENERATED ALWAYS AS
            (to_tsvector('english', heading || ' ' || content)) STORED
        """
    )
    op.create_index("ix_chunks_tsv", "chunks", ["tsv"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_index("ix_chunks_tsv", "chunks")
    op.drop_column("chunks", "tsv")
    op.drop_column("chunks", "heading")
    op.drop_index("ix_documents_tags", "documents")
    op.drop_index("ix_documents_metadata", "documents")
    op.drop_constraint("uq_documents_tenant_key", "documents", type_="unique")
    # Versions of one key share nothing but the key, so duplicates of content are possible now;
    # keep the newest row per (tenant, content) before restoring the old uniqueness.
    op.execute(
        """
        DELETE FROM documents d USING documents newer
        WHERE d.tenant_id = newer.tenant_id AND d.content_hash = newer.content_hash
          AND (d.updated_at, d.id) < (newer.updated_at, newer.id)
        """
    )
    op.create_unique_constraint(
        "uq_documents_tenant_id", "documents", ["tenant_id", "content_hash"]
    )
    for column in ("updated_at", "tags", "version", "key"):
        op.drop_column("documents", column)
