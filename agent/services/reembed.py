"""Re-embedding stored chunks, for when the embedding model changes.

Walks the documents of one tenant (or of all) in id order and, for groups of about
`ingest_group_chunks` chunks, embeds the stored text exactly as ingestion did
(`embedding_input`) through the `embed` role, then writes each document's new vectors in one
commit of its own: a search sees a document wholly with old vectors or wholly with new ones.
A document re-ingested or deleted meanwhile is skipped (its chunks are already the current
model's, or gone). While a run is under way, documents not yet reached still carry the old
model's vectors, so rankings mix the two until it ends; the vector index is rebuilt afterwards.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from agent.domain import Document, StoredChunk
from agent.ports import DocumentStore, Embedder
from agent.services.document_input import embedding_input
from agent.settings import AgentSettings

PAGE_DOCUMENTS = 200
_Stored = tuple[Document, list[StoredChunk]]


@dataclass(frozen=True, slots=True)
class ReembedProgress:
    documents: int
    """Documents re-embedded so far."""
    skipped: int
    """Documents replaced or deleted while the run went on, left as they were."""
    chunks: int
    """Chunks given new vectors so far."""
    elapsed_s: float


Progress = Callable[[ReembedProgress], None]


@dataclass(frozen=True, slots=True)
class ReembedReport:
    documents: int
    skipped: int
    chunks: int
    seconds: float
    model: str
    """The model (deployment) that produced the new vectors."""


@dataclass
class _Tally:
    started: float
    documents: int = 0
    skipped: int = 0
    chunks: int = 0
    model: str = ""

    def progress(self) -> ReembedProgress:
        elapsed = time.perf_counter() - self.started
        return ReembedProgress(self.documents, self.skipped, self.chunks, elapsed)


class Reembedder:
    def __init__(self, store: DocumentStore, embedder: Embedder, settings: AgentSettings) -> None:
        self._store = store
        self._embedder = embedder
        self._group_chunks = settings.ingest_group_chunks

    async def run(
        self, tenant_id: uuid.UUID | None, progress: Progress | None = None
    ) -> ReembedReport:
        """Re-embed every chunk of the tenant's documents (all tenants' with None)."""
        tally = _Tally(time.perf_counter())
        group: list[_Stored] = []
        async for stored in self._walk(tenant_id):
            group.append(stored)
            if sum(len(chunks) for _, chunks in group) >= self._group_chunks:
                await self._write(group, tally, progress)
                group = []
        if group:
            await self._write(group, tally, progress)
        seconds = time.perf_counter() - tally.started
        return ReembedReport(tally.documents, tally.skipped, tally.chunks, seconds, tally.model)

    async def _walk(self, tenant_id: uuid.UUID | None) -> AsyncIterator[_Stored]:
        after: uuid.UUID | None = None
        while True:
            page = await self._store.documents_after(tenant_id, after, PAGE_DOCUMENTS)
            for doc in page:
                chunks = await self._store.list_chunks(doc.id, doc.tenant_id, doc.chunk_count)
                if chunks:
                    yield doc, chunks
            if len(page) < PAGE_DOCUMENTS:
                return
            after = page[-1].id

    async def _write(self, group: list[_Stored], tally: _Tally, progress: Progress | None) -> None:
        """Embed the group's chunks in one call, then commit each document on its own."""
        texts = [embedding_input(d.title, c.heading, c.content) for d, cs in group for c in cs]
        result = await self._embedder.embed(texts)
        tally.model = result.deployment or result.model
        vectors = iter(result.vectors)
        for doc, chunks in group:
            embeddings = {c.id: next(vectors) for c in chunks}
            if await self._store.replace_embeddings(doc, embeddings):
                tally.documents += 1
                tally.chunks += len(chunks)
            else:
                tally.skipped += 1
        if progress is not None:
            progress(tally.progress())
