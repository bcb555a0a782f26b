"""Documents and their chunks, always inside one tenant: reads, writes, deletion, the HNSW index.

Writes go through `datastore.repos.document_writes` (COPY BINARY, one commit per batch) and
search through `datastore.repos.search`; this class is the `DocumentStore` that composes them.
The vector index can be dropped before a bulk load and built once over its rows: building an
HNSW graph over every row at once is several times faster than inserting rows into it one by one
(when the build starts is `agent.services.index_timing`'s rule). Builds use pgvector's parallel
build (the server's `max_parallel_maintenance_workers`, 2 by default) and BUILD_MEMORY.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, delete, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from agent.domain import (
    ChunkHit,
    Document,
    DocumentWrite,
    NewDocument,
    SearchCalibration,
    SearchQuery,
    SearchResult,
    StoredChunk,
)
from datastore.driver import raw_connection
from datastore.errors import translated
from datastore.fastpath import FastPath
from datastore.repos import search_tuning
from datastore.repos.document_writes import document_from, replace_embeddings, write_batch
from datastore.repos.search import SearchRepository
from datastore.schema import ChunkRow, DocumentRow
from datastore.schema.documents import HNSW_EF_CONSTRUCTION, HNSW_INDEX, HNSW_M

DOCS = cast(Table, DocumentRow.__table__)
CHUNKS = cast(Table, ChunkRow.__table__)

INDEX_LOCK_KEY = 0x6A7272_151
"""Serialises dropping and building the vector index across processes (cf. the migration lock)."""
BUILD_MEMORY = "512MB"
"""maintenance_work_mem for an index build: an HNSW graph that fits in it builds much faster."""
_CREATE_INDEX = (
    "CREATE INDEX {concurrently} IF NOT EXISTS " + HNSW_INDEX + " ON chunks "
    "USING hnsw (embedding halfvec_cosine_ops)"
    f" WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
)


class DocumentRepository:
    def __init__(self, engine: AsyncEngine, search_pool: FastPath) -> None:
        self._engine = engine
        self._search = SearchRepository(search_pool)

    async def find_documents(
        self, tenant_id: uuid.UUID, keys: Sequence[str]
    ) -> dict[str, Document]:
        if not keys:
            return {}
        stmt = select(DOCS).where(DOCS.c.tenant_id == tenant_id, DOCS.c.key.in_(list(keys)))
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {r.key: document_from(r._mapping) for r in rows}

    async def write_documents(
        self,
        tenant_id: uuid.UUID,
        documents: Sequence[NewDocument],
        access_tags: tuple[str, ...] | None = None,
    ) -> list[DocumentWrite | None]:
        if not documents:
            return []
        async with translated(), raw_connection(self._engine) as pg, pg.transaction():
            return await write_batch(pg, tenant_id, documents, access_tags)

    async def documents_after(
        self, tenant_id: uuid.UUID | None, after: uuid.UUID | None, limit: int
    ) -> list[Document]:
        stmt = select(DOCS).order_by(DOCS.c.id).limit(limit)
        if tenant_id is not None:
            stmt = stmt.where(DOCS.c.tenant_id == tenant_id)
        if after is not None:
            stmt = stmt.where(DOCS.c.id > after)
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [document_from(r._mapping) for r in rows]

    async def replace_embeddings(
        self, document: Document, embeddings: Mapping[int, Sequence[float]]
    ) -> bool:
        async with translated(), raw_connection(self._engine) as pg, pg.transaction():
            return await replace_embeddings(pg, document, embeddings)

    async def get_document(
        self,
        document_id: uuid.UUID,
        tenant_id: uuid.UUID,
        access_tags: tuple[str, ...] | None = None,
    ) -> Document | None:
        stmt = select(DOCS).where(
            DOCS.c.id == document_id, DOCS.c.tenant_id == tenant_id, *_visible(access_tags)
        )
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else document_from(row._mapping)

    async def list_documents(
        self,
        tenant_id: uuid.UUID,
        limit: int,
        offset: int = 0,
        access_tags: tuple[str, ...] | None = None,
    ) -> list[Document]:
        stmt = (
            select(DOCS)
            .where(DOCS.c.tenant_id == tenant_id, *_visible(access_tags))
            .order_by(DOCS.c.created_at.desc(), DOCS.c.id)
            .limit(limit)
            .offset(offset)
        )
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [document_from(r._mapping) for r in rows]

    async def list_chunks(
        self,
        document_id: uuid.UUID,
        tenant_id: uuid.UUID,
        limit: int,
        access_tags: tuple[str, ...] | None = None,
    ) -> list[StoredChunk]:
        document = select(DOCS.c.id).where(
            DOCS.c.id == document_id, DOCS.c.tenant_id == tenant_id, *_visible(access_tags)
        )
        stmt = (
            select(CHUNKS.c.id, CHUNKS.c.ordinal, CHUNKS.c.heading, CHUNKS.c.content)
            .where(CHUNKS.c.document_id.in_(document), CHUNKS.c.tenant_id == tenant_id)
            .order_by(CHUNKS.c.ordinal)
            .limit(limit)
        )
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [StoredChunk(r.id, r.ordinal, r.heading, r.content) for r in rows]

    async def delete_document(
        self,
        document_id: uuid.UUID,
        tenant_id: uuid.UUID,
        access_tags: tuple[str, ...] | None = None,
    ) -> Document | None:
        # The chunks go with it (ON DELETE CASCADE), in the same statement's transaction. The
        # access tags are part of the statement: a document retagged meanwhile is not deleted.
        stmt = (
            delete(DOCS)
            .where(DOCS.c.id == document_id, DOCS.c.tenant_id == tenant_id, *_visible(access_tags))
            .returning(*DOCS.c)
        )
        async with translated(), self._engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else document_from(row._mapping)

    async def search(self, query: SearchQuery) -> SearchResult:
        return await self._search.search(query)

    async def search_chunks(
        self, tenant_id: uuid.UUID, embedding: Sequence[float], k: int
    ) -> list[ChunkHit]:
        result = await self._search.search(SearchQuery(tenant_id, list(embedding), k))
        return result.hits

    async def count_chunks(self) -> int:
        async with translated(), self._engine.connect() as conn:
            estimate = (
                await conn.execute(
                    text("SELECT reltuples::bigint FROM pg_class WHERE oid = 'chunks'::regclass")
                )
            ).scalar_one()
            if estimate < 0:  # never vacuumed or analyzed: no estimate yet, so count
                estimate = (await conn.execute(text("SELECT count(*) FROM chunks"))).scalar_one()
        return int(estimate)

    async def drop_vector_index(self) -> bool:
        async with translated(), self._engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": INDEX_LOCK_KEY})
            existed = await _index_state(conn) is _IndexState.VALID
            await conn.execute(text(f"DROP INDEX IF EXISTS {HNSW_INDEX}"))
        return existed

    async def build_vector_index(self, *, concurrently: bool = False) -> bool:
        if not concurrently:
            # In one transaction: writers wait for the build, readers carry on (exact scans).
            async with translated(), self._engine.begin() as conn:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": INDEX_LOCK_KEY})
                state = await _index_state(conn)
                if state is _IndexState.INVALID:  # left by a concurrent build that failed
                    await conn.execute(text(f"DROP INDEX {HNSW_INDEX}"))
                missing = state is not _IndexState.VALID
                await conn.execute(text(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'"))
                await conn.execute(text(_CREATE_INDEX.format(concurrently="")))
                await conn.execute(text("ANALYZE chunks"))
                await conn.execute(text("ANALYZE documents"))
            self._search.forget_estimates()
            return missing
        # CONCURRENTLY cannot run in a transaction block; it builds without blocking writers.
        async with translated(), self._engine.connect() as base:
            conn = await base.execution_options(isolation_level="AUTOCOMMIT")
            state = await _index_state(conn)
            if state is _IndexState.INVALID:
                await conn.execute(text(f"DROP INDEX CONCURRENTLY {HNSW_INDEX}"))
            missing = state is not _IndexState.VALID
            await conn.execute(text(f"SET maintenance_work_mem = '{BUILD_MEMORY}'"))
            try:
                if missing:
                    await conn.execute(text(_CREATE_INDEX.format(concurrently="CONCURRENTLY")))
                else:
                    await conn.execute(text(f"REINDEX INDEX CONCURRENTLY {HNSW_INDEX}"))
                await conn.execute(text("ANALYZE chunks"))
                await conn.execute(text("ANALYZE documents"))
            finally:
                await conn.execute(text("RESET maintenance_work_mem"))
        self._search.forget_estimates()
        return missing

    async def calibrate(
        self,
        tenant_id: uuid.UUID,
        *,
        target: float,
        sample: int,
        k: int,
        if_drifted: tuple[int, float] | None = None,
        questions: Sequence[Sequence[float]] = (),
    ) -> SearchCalibration | None:
        async with translated(), raw_connection(self._engine) as pg:
            found = await search_tuning.calibrate(
                pg,
                tenant_id,
                target=target,
                sample=sample,
                k=k,
                if_drifted=if_drifted,
                questions=questions,
            )
        self._search.forget_estimates()  # this process' searches use it at once
        return found

    async def calibration(self, tenant_id: uuid.UUID) -> SearchCalibration | None:
        async with translated(), raw_connection(self._engine) as pg:
            return await search_tuning.stored(pg, tenant_id)

    async def recent_questions(self, tenant_id: uuid.UUID, count: int, chars: int) -> list[str]:
        async with translated(), raw_connection(self._engine) as pg:
            return await search_tuning.recent_questions(pg, tenant_id, count, chars)

    async def drifted(self, min_chunks: int, drift: float) -> list[uuid.UUID]:
        async with translated(), raw_connection(self._engine) as pg:
            return await search_tuning.drifted(pg, min_chunks, drift)


def _visible(access_tags: tuple[str, ...] | None) -> list[ColumnElement[bool]]:
    """The condition a restricted caller's documents meet: one of its tags (none: no condition;
    `()`: nothing). Beside the tenant predicate, like the search's (`search_sql`)."""
    if access_tags is None:
        return []
    return [DOCS.c.tags.overlap(list(access_tags))]


class _IndexState(Enum):
    MISSING = "missing"
    VALID = "valid"
    INVALID = "invalid"
    """Left behind by a concurrent build that failed: writers maintain it, searches ignore it."""


async def _index_state(conn: Any) -> _IndexState:
    found = await conn.execute(
        text(
            # Resolved by the search path, as the CREATE and DROP statements resolve it.
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"
        ),
        {"name": HNSW_INDEX},
    )
    row = found.first()
    if row is None:
        return _IndexState.MISSING
    return _IndexState.VALID if row[0] else _IndexState.INVALID
