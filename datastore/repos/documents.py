"""Documents, chunks and vector search over them, always inside one tenant."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any, cast

from pgvector import HalfVector
from sqlalchemy import Row, Table, insert, literal, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from agent.domain import JSON, ChunkHit, Document, NewChunk
from datastore.errors import translated
from datastore.schema import ChunkRow, DocumentRow
from datastore.schema.documents import EMBEDDING_DIM

DOCS = cast(Table, DocumentRow.__table__)
CHUNKS = cast(Table, ChunkRow.__table__)


def _document(row: Row[Any]) -> Document:
    m = row._mapping
    return Document(
        id=m["id"],
        tenant_id=m["tenant_id"],
        title=m["title"],
        source=m["source"],
        metadata=m["metadata"],
        content_hash=m["content_hash"],
        chunk_count=m["chunk_count"],
        created_at=m["created_at"],
    )


def _check_dim(vector: Sequence[float]) -> None:
    if len(vector) != EMBEDDING_DIM:
        raise ValueError(
            f"embedding has {len(vector)} dimensions; the chunks table stores {EMBEDDING_DIM}"
        )


class DocumentRepository:
    def __init__(self, engine: AsyncEngine, *, ef_search: int = 64) -> None:
        self._engine = engine
        self._ef_search = ef_search

    async def find_document_by_hash(
        self, tenant_id: uuid.UUID, content_hash: str
    ) -> Document | None:
        stmt = select(DOCS).where(
            DOCS.c.tenant_id == tenant_id, DOCS.c.content_hash == content_hash
        )
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _document(row)

    async def insert_document(
        self,
        tenant_id: uuid.UUID,
        *,
        title: str,
        source: str | None,
        metadata: JSON,
        content_hash: str,
        chunks: Sequence[NewChunk],
    ) -> tuple[Document, bool]:
        for chunk in chunks:
            _check_dim(chunk.embedding)
        doc_id = uuid.uuid4()
        stmt = (
            pg_insert(DOCS)
            .values(
                id=doc_id,
                tenant_id=tenant_id,
                title=title,
                source=source,
                metadata=metadata,
                content_hash=content_hash,
                chunk_count=len(chunks),
            )
            .on_conflict_do_nothing(index_elements=[DOCS.c.tenant_id, DOCS.c.content_hash])
            .returning(*DOCS.c)
        )
        async with translated(), self._engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
            if row is None:
                # The same content is already stored for this tenant: ingestion is idempotent.
                existing = (
                    await conn.execute(
                        select(DOCS).where(
                            DOCS.c.tenant_id == tenant_id, DOCS.c.content_hash == content_hash
                        )
                    )
                ).one()
                return _document(existing), False
            if chunks:
                await conn.execute(
                    insert(CHUNKS),
                    [
                        {
                            "document_id": doc_id,
                            "tenant_id": tenant_id,
                            "ordinal": c.ordinal,
                            "content": c.content,
                            "content_hash": _sha256(c.content),
                            "embedding": HalfVector(c.embedding),
                        }
                        for c in chunks
                    ],
                )
        return _document(row), True

    async def get_document(self, document_id: uuid.UUID, tenant_id: uuid.UUID) -> Document | None:
        stmt = select(DOCS).where(DOCS.c.id == document_id, DOCS.c.tenant_id == tenant_id)
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _document(row)

    async def list_documents(self, tenant_id: uuid.UUID, limit: int) -> list[Document]:
        stmt = (
            select(DOCS)
            .where(DOCS.c.tenant_id == tenant_id)
            .order_by(DOCS.c.created_at.desc())
            .limit(limit)
        )
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_document(r) for r in rows]

    async def search_chunks(
        self, tenant_id: uuid.UUID, embedding: Sequence[float], k: int
    ) -> list[ChunkHit]:
        _check_dim(embedding)
        query = literal(HalfVector(list(embedding)), CHUNKS.c.embedding.type)
        distance = CHUNKS.c.embedding.cosine_distance(query)
        stmt = (
            select(
                CHUNKS.c.id,
                CHUNKS.c.document_id,
                DOCS.c.title,
                CHUNKS.c.ordinal,
                CHUNKS.c.content,
                (1 - distance).label("score"),
            )
            .join(DOCS, DOCS.c.id == CHUNKS.c.document_id)
            # The tenant filter is part of the query itself, never a post-filter on results.
            .where(CHUNKS.c.tenant_id == tenant_id)
            .order_by(distance)
            .limit(k)
        )
        async with translated(), self._engine.begin() as conn:
            # With a filter, a plain HNSW scan stops after ef_search candidates and can return
            # fewer than k rows; iterative scans keep walking the graph until k rows match.
            await conn.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))
            await conn.execute(text(f"SET LOCAL hnsw.ef_search = {int(self._ef_search)}"))
            rows = (await conn.execute(stmt)).all()
        return [
            ChunkHit(
                chunk_id=r.id,
                document_id=r.document_id,
                title=r.title,
                ordinal=r.ordinal,
                content=r.content,
                score=float(r.score),
            )
            for r in rows
        ]


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
