"""Documents and search: what ingestion writes and retrieval reads."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Protocol

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


class SearchStore(Protocol):
    async def search(self, query: SearchQuery) -> SearchResult:
        """The top `query.k` chunks of the tenant's documents matching the filter.

        Exactly `k` hits whenever at least `k` chunks are in scope; never a chunk of another
        tenant. With `query.text`, vector and keyword results are fused (reciprocal rank).
        """
        ...

    async def search_chunks(
        self, tenant_id: uuid.UUID, embedding: Sequence[float], k: int
    ) -> list[ChunkHit]:
        """Vector search without filters: `search` for callers that need only the hits."""
        ...


class DocumentStore(SearchStore, Protocol):
    async def find_documents(
        self, tenant_id: uuid.UUID, keys: Sequence[str]
    ) -> dict[str, Document]:
        """The stored documents under these keys (missing keys are absent from the result)."""
        ...

    async def write_documents(
        self,
        tenant_id: uuid.UUID,
        documents: Sequence[NewDocument],
        access_tags: tuple[str, ...] | None = None,
    ) -> list[DocumentWrite | None]:
        """Store each document under its key in one transaction, in input order.

        A key already stored gets a new version whose chunks replace the old ones in the same
        commit, so a reader sees the old document or the new one, never a mix. The keys must be
        distinct within one call.

        With `access_tags` (None: the whole tenant), a key held by a document carrying none of
        them is left as it is and its result is None: the condition is checked by the write
        itself, as it stores, so a document retagged or created by another writer after the
        caller looked it up is never replaced. The other documents are stored all the same.
        """
        ...

    async def documents_after(
        self, tenant_id: uuid.UUID | None, after: uuid.UUID | None, limit: int
    ) -> list[Document]:
        """Up to `limit` documents in id order after `after`, of one tenant or (None) of all: a
        walk over every document that new and deleted ones cannot derail."""
        ...

    async def replace_embeddings(
        self, document: Document, embeddings: Mapping[int, Sequence[float]]
    ) -> bool:
        """Store new embeddings for the chunks of `document` (chunk id -> vector) in one commit.

        False, and nothing written, when the document's content is no longer the one they were
        computed from (it was replaced or deleted meanwhile).
        """
        ...

    # `access_tags` (None: the whole tenant) hides, inside the statement, every document that
    # carries none of them: it is not read, listed or deleted, exactly as if it did not exist.
    async def get_document(
        self,
        document_id: uuid.UUID,
        tenant_id: uuid.UUID,
        access_tags: tuple[str, ...] | None = None,
    ) -> Document | None: ...
    async def list_documents(
        self,
        tenant_id: uuid.UUID,
        limit: int,
        offset: int = 0,
        access_tags: tuple[str, ...] | None = None,
    ) -> list[Document]: ...
    async def list_chunks(
        self,
        document_id: uuid.UUID,
        tenant_id: uuid.UUID,
        limit: int,
        access_tags: tuple[str, ...] | None = None,
    ) -> list[StoredChunk]: ...
    async def delete_document(
        self,
        document_id: uuid.UUID,
        tenant_id: uuid.UUID,
        access_tags: tuple[str, ...] | None = None,
    ) -> Document | None:
        """Delete a document and its chunks; the deleted document, or None if there was none."""
        ...

    async def count_chunks(self) -> int:
        """Chunks stored over all tenants (an estimate from statistics is fine)."""
        ...

    async def drop_vector_index(self) -> bool:
        """Drop the HNSW index before a bulk load; whether it existed."""
        ...

    async def build_vector_index(self, *, concurrently: bool = False) -> bool:
        """Build (or rebuild) the HNSW index and refresh statistics; whether it was missing."""
        ...


class SearchTuningStore(Protocol):
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
        """Measure and store the `ef_search` the tenant's searches use.

        The queries are `questions` (embedded), else `sample` sums of two random chunks of the
        tenant; for rising `ef_search`, the HNSW scan's recall@k is measured against an exact
        scan of the same rows, and the smallest `ef_search` reaching `target` is stored (the
        largest tried when none does). None, and nothing stored, when the vector index is
        missing or the tenant has fewer chunks than k + 1. With `if_drifted` (min_chunks,
        drift: `drifted`'s arguments), the tenant is measured only if it is still drifted when
        its turn comes; otherwise the stored calibration is returned.
        """
        ...

    async def calibration(self, tenant_id: uuid.UUID) -> SearchCalibration | None:
        """The tenant's stored calibration, if it was ever measured."""
        ...

    async def recent_questions(self, tenant_id: uuid.UUID, count: int, chars: int) -> list[str]:
        """Up to `count` distinct inputs of the tenant's latest runs, each cut to `chars`."""
        ...

    async def drifted(self, min_chunks: int, drift: float) -> list[uuid.UUID]:
        """Tenants with at least `min_chunks` chunks never measured, or whose chunk count moved
        by more than `drift` (a share) since they were."""
        ...
