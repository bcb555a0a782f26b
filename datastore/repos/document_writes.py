"""Storing documents by key: one transaction per batch, chunks loaded with COPY BINARY.

Per batch: one pipelined upsert of every document whose content changed (a new row, or the old
row with `version + 1`), one DELETE of the replaced documents' old chunks, one binary COPY of all
new chunks, one commit. The document row keeps its id across versions, and the old chunks go
and the new ones arrive in the same commit, so a concurrent reader sees either version whole.

A restricted writer (access tags, `agent.services.access`) replaces only a document carrying one
of its tags, and that condition is part of each write statement: the service's own check comes
from a lookup made before embedding, and the document may have been retagged, or created by
another key, since. A write the condition stopped is reported as hidden (None), and nothing of
that document is written; the batch's other documents go in, in the same commit.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from pgvector import HalfVector
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from sqlalchemy import RowMapping

from agent.domain import Document, DocumentWrite, NewDocument, WriteStatus
from agent.errors import Conflict
from datastore.driver import AsyncPg
from datastore.schema.documents import EMBEDDING_DIM

_UPSERT = """
INSERT INTO documents AS d
    (id, tenant_id, key, title, source, metadata, tags, content_hash, chunk_count)
VALUES (%(id)s, %(tenant)s, %(key)s, %(title)s, %(source)s, %(metadata)s, %(tags)s, %(hash)s,
        %(chunks)s)
ON CONFLICT (tenant_id, key) DO UPDATE SET
    title = excluded.title, source = excluded.source, metadata = excluded.metadata,
    tags = excluded.tags, content_hash = excluded.content_hash,
    chunk_count = excluded.chunk_count, version = d.version + 1, updated_at = now()
-- A writer that lost a race to store the same content finds nothing to change: no new version.
WHERE (d.title, d.source, d.metadata, d.tags, d.content_hash) IS DISTINCT FROM
      (excluded.title, excluded.source, excluded.metadata, excluded.tags, excluded.content_hash)
{access}
RETURNING d.*, (d.xmax = 0) AS inserted
"""

# Metadata or tags changed, the content did not: the chunks (and their embeddings) stay.
_UPDATE_LABELS = """
UPDATE documents AS d SET source = %(source)s, metadata = %(metadata)s, tags = %(tags)s,
    version = d.version + 1, updated_at = now()
WHERE d.tenant_id = %(tenant)s AND d.key = %(key)s AND d.content_hash = %(hash)s
  AND (d.source, d.metadata, d.tags) IS DISTINCT FROM
      (%(source)s, %(metadata)s::jsonb, %(tags)s::text[])
{access}
RETURNING d.*, false AS inserted
"""

# A restricted writer's condition on the stored row it would replace (see the module docstring).
_WITHIN_ACCESS = "  AND d.tags && %(access)s::text[]"
_STATEMENTS = {
    restricted: (
        _UPSERT.format(access=_WITHIN_ACCESS if restricted else ""),
        _UPDATE_LABELS.format(access=_WITHIN_ACCESS if restricted else ""),
    )
    for restricted in (False, True)
}
"""(upsert, label update), for an unrestricted writer (False) and a restricted one (True)."""

_CURRENT = "SELECT d.* FROM documents d WHERE d.tenant_id = %(tenant)s AND d.key = ANY(%(keys)s)"

_COPY = (
    "COPY chunks (document_id, tenant_id, ordinal, heading, content, content_hash, embedding)"
    " FROM STDIN WITH (FORMAT BINARY)"
)
_COPY_TYPES = ["uuid", "uuid", "int4", "text", "text", "text", "halfvec"]


def document_from(m: Mapping[str, Any] | RowMapping) -> Document:
    return Document(
        id=m["id"],
        tenant_id=m["tenant_id"],
        key=m["key"],
        title=m["title"],
        source=m["source"],
        metadata=m["metadata"],
        tags=tuple(m["tags"]),
        content_hash=m["content_hash"],
        chunk_count=m["chunk_count"],
        version=m["version"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def check_dim(vector: Sequence[float]) -> None:
    if len(vector) != EMBEDDING_DIM:
        raise ValueError(
            f"embedding has {len(vector)} dimensions; the chunks table stores {EMBEDDING_DIM}"
        )


async def write_batch(
    pg: AsyncPg,
    tenant_id: uuid.UUID,
    documents: Sequence[NewDocument],
    access_tags: tuple[str, ...] | None = None,
) -> list[DocumentWrite | None]:
    """Store `documents` in the caller's open transaction; results in input order, None for a
    document whose key holds one outside `access_tags` (None: the whole tenant), left as is."""
    if len({d.key for d in documents}) != len(documents):
        raise ValueError("a batch must not hold the same key twice")
    for doc in documents:
        for chunk in doc.chunks or ():
            check_dim(chunk.embedding)
    upsert, update_labels = _STATEMENTS[access_tags is not None]
    rows: dict[str, dict[str, Any] | None] = {}
    async with pg.cursor(row_factory=dict_row) as cur:
        full = [d for d in documents if d.chunks is not None]
        if full:
            params = [_params(tenant_id, d, access_tags) for d in full]
            await cur.executemany(upsert, params, returning=True)
            for doc in full:
                rows[doc.key] = await cur.fetchone()
                cur.nextset()
        for doc in documents:
            if doc.chunks is None:
                await cur.execute(update_labels, _params(tenant_id, doc, access_tags))
                rows[doc.key] = await cur.fetchone()
        missing = [key for key, row in rows.items() if row is None]
        current: dict[str, dict[str, Any]] = {}
        if missing:
            await cur.execute(_CURRENT, {"tenant": tenant_id, "keys": missing})
            current = {r["key"]: r for r in await cur.fetchall()}
        results = [_outcome(d, rows[d.key], current.get(d.key), access_tags) for d in documents]
        replaced = [
            w.document.id
            for w, d in zip(results, documents, strict=True)
            if w is not None and w.status is WriteStatus.UPDATED and d.chunks is not None
        ]
        if replaced:
            await cur.execute("DELETE FROM chunks WHERE document_id = ANY(%s)", (replaced,))
    await _copy_chunks(pg, tenant_id, documents, results)
    return results


def _params(
    tenant_id: uuid.UUID, doc: NewDocument, access_tags: tuple[str, ...] | None
) -> dict[str, Any]:
    return {
        "access": None if access_tags is None else list(access_tags),
        "id": uuid.uuid4(),
        "tenant": tenant_id,
        "key": doc.key,
        "title": doc.title,
        "source": doc.source,
        "metadata": Jsonb(doc.metadata),
        "tags": list(doc.tags),
        "hash": doc.content_hash,
        "chunks": len(doc.chunks) if doc.chunks is not None else 0,
    }


def _outcome(
    doc: NewDocument,
    row: dict[str, Any] | None,
    current: dict[str, Any] | None,
    access_tags: tuple[str, ...] | None,
) -> DocumentWrite | None:
    if row is not None:
        status = WriteStatus.CREATED if row["inserted"] else WriteStatus.UPDATED
        return DocumentWrite(document_from(row), status)
    if (
        current is not None
        and access_tags is not None
        and set(current["tags"]).isdisjoint(access_tags)
    ):
        # The statement's access condition stopped it: not the writer's to replace, nor to see
        # (not even as unchanged).
        return None
    if current is not None and current["content_hash"] == doc.content_hash:
        # Stored already, by an earlier call or a concurrent writer: nothing to change.
        return DocumentWrite(document_from(current), WriteStatus.UNCHANGED)
    # Only a label update can get here: its content was replaced or deleted meanwhile.
    raise Conflict(f"document {doc.key!r} changed while it was being stored; ingest it again")


async def _copy_chunks(
    pg: AsyncPg,
    tenant_id: uuid.UUID,
    documents: Sequence[NewDocument],
    results: Sequence[DocumentWrite | None],
) -> None:
    fresh = [
        (w.document.id, d.chunks)
        for d, w in zip(documents, results, strict=True)
        if d.chunks and w is not None and w.status is not WriteStatus.UNCHANGED
    ]
    if not fresh:
        return
    async with pg.cursor() as cur, cur.copy(_COPY) as copy:
        copy.set_types(_COPY_TYPES)
        for document_id, chunks in fresh:
            for c in chunks:
                digest = hashlib.sha256(c.content.encode()).hexdigest()
                await copy.write_row(
                    (
                        document_id,
                        tenant_id,
                        c.ordinal,
                        c.heading,
                        c.content,
                        digest,
                        HalfVector(c.embedding),
                    )
                )


_LOCK_CONTENT = "SELECT content_hash FROM documents WHERE id = %s AND tenant_id = %s FOR UPDATE"
_SET_EMBEDDINGS = """
UPDATE chunks AS c SET embedding = u.embedding
FROM unnest(%(ids)s::bigint[], %(vectors)s::halfvec[]) AS u(id, embedding)
WHERE c.id = u.id AND c.document_id = %(document)s
"""


async def replace_embeddings(
    pg: AsyncPg,
    document: Document,
    embeddings: Mapping[int, Sequence[float]],
) -> bool:
    """Give the chunks of `document` new embeddings, in the caller's open transaction.

    The document row is locked first, so a concurrent re-ingestion waits for this to commit or
    has already replaced the chunks: when the stored content is no longer the one these
    embeddings were computed from (its hash changed, or it was deleted) nothing is written and
    the answer is False. A label-only update keeps the chunks, so it does not stop this one.
    """
    for vector in embeddings.values():
        check_dim(vector)
    async with pg.cursor() as cur:
        await cur.execute(_LOCK_CONTENT, (document.id, document.tenant_id))
        row = await cur.fetchone()
        if row is None or row[0] != document.content_hash:
            return False
        ids = list(embeddings)
        await cur.execute(
            _SET_EMBEDDINGS,
            {
                "ids": ids,
                "vectors": [HalfVector(list(embeddings[i])) for i in ids],
                "document": document.id,
            },
        )
        if cur.rowcount != len(ids):
            # Same content, yet not these chunks: stored chunks never change without the hash.
            raise Conflict(f"document {document.key!r} has other chunks than were re-embedded")
    return True
