"""Documents of a tenant: ingest (one or many), read back, delete, search, rebuild the index.

Ingestion runs through `agent.services.ingest` (batched embedding and commits), search through
`agent.services.search`, re-embedding through `agent.services.reembed`; this service is what
the API and the CLI hold. Every read, write and search takes the caller's `access_tags` (None:
the whole tenant), so a restricted API key sees, changes and finds only the documents carrying
one of its tags, and another document is `not_found` (`agent.services.access`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from agent.domain import JSON, Document, SearchFilter, StoredChunk
from agent.errors import CallerError, NotFound
from agent.formats import DocumentFormat
from agent.ports import DocumentStore, Embedder
from agent.services.access import AccessTagRequired, AccessTags, within
from agent.services.document_input import DocumentInput
from agent.services.ingest import Ingestor, IngestOutcome, PendingDocument, Progress
from agent.services.reembed import Progress as ReembedProgressSink
from agent.services.reembed import Reembedder, ReembedReport
from agent.services.search import Retrieval, SearchMode, SearchService
from agent.settings import AgentSettings

MAX_LIST = 1000
MAX_SHOWN_CHUNKS = 1000


class DocumentService:
    def __init__(
        self, documents: DocumentStore, embedder: Embedder, settings: AgentSettings
    ) -> None:
        self._documents = documents
        self._ingestor = Ingestor(documents, embedder, settings)
        self._search = SearchService(documents, embedder)
        self._reembedder = Reembedder(documents, embedder, settings)

    async def ingest(
        self,
        tenant_id: uuid.UUID,
        *,
        title: str | None,
        text: str,
        metadata: JSON | None = None,
        source: str | None = None,
        key: str | None = None,
        tags: tuple[str, ...] = (),
        format: DocumentFormat = DocumentFormat.TEXT,
        access_tags: AccessTags = None,
    ) -> tuple[Document, bool]:
        """Store one document; (document, whether its key was new). See `store`."""
        outcome = await self.store(
            tenant_id,
            DocumentInput(
                text=text,
                title=title,
                format=format,
                metadata=metadata or {},
                tags=tags,
                key=key,
                source=source,
            ),
            access_tags=access_tags,
        )
        assert outcome.document is not None  # only failed outcomes have none; `store` raised
        return outcome.document, outcome.status == "created"

    async def store(
        self, tenant_id: uuid.UUID, document: DocumentInput, *, access_tags: AccessTags = None
    ) -> IngestOutcome:
        """Store one document; `CallerError` if it is not valid, `AccessTagRequired` if a
        restricted caller could not see it afterwards. Unchanged content is a no-op."""
        [outcome] = await self._ingestor.run(
            tenant_id, [PendingDocument("document", lambda: document)], access_tags=access_tags
        )
        if outcome.status == "failed":
            reason = outcome.reason or "the document is not valid"
            if outcome.code == AccessTagRequired.code:
                raise AccessTagRequired(reason)
            raise CallerError(reason)
        return outcome

    async def ingest_many(
        self,
        tenant_id: uuid.UUID,
        items: Iterable[PendingDocument],
        *,
        expected_chunks: int = 0,
        progress: Progress | None = None,
        access_tags: AccessTags = None,
    ) -> list[IngestOutcome]:
        """Store many documents; each that cannot be stored is a `failed` outcome with a reason.

        `expected_chunks` (an estimate is fine) lets a large load build the vector index once
        over its rows instead of growing it row by row: after the load, or concurrently while its
        last groups are embedded when embedding is the slower side (`index_timing`).
        """
        return await self._ingestor.run(
            tenant_id,
            items,
            expected_chunks=expected_chunks,
            progress=progress,
            access_tags=access_tags,
        )

    async def get(
        self, document_id: uuid.UUID, tenant_id: uuid.UUID, *, access_tags: AccessTags = None
    ) -> Document:
        doc = await self._documents.get_document(document_id, tenant_id, access_tags)
        if doc is None:
            raise NotFound(f"document {document_id} not found")
        return doc

    async def chunks(
        self,
        document_id: uuid.UUID,
        tenant_id: uuid.UUID,
        limit: int = 100,
        *,
        access_tags: AccessTags = None,
    ) -> list[StoredChunk]:
        await self.get(document_id, tenant_id, access_tags=access_tags)
        if not 1 <= limit <= MAX_SHOWN_CHUNKS:
            raise CallerError(f"limit must be between 1 and {MAX_SHOWN_CHUNKS}")
        return await self._documents.list_chunks(document_id, tenant_id, limit, access_tags)

    async def list(
        self,
        tenant_id: uuid.UUID,
        limit: int = 50,
        offset: int = 0,
        *,
        access_tags: AccessTags = None,
    ) -> list[Document]:
        if not 1 <= limit <= MAX_LIST:
            raise CallerError(f"limit must be between 1 and {MAX_LIST}")
        if offset < 0:
            raise CallerError("offset must not be negative")
        return await self._documents.list_documents(tenant_id, limit, offset, access_tags)

    async def delete(
        self, document_id: uuid.UUID, tenant_id: uuid.UUID, *, access_tags: AccessTags = None
    ) -> Document:
        doc = await self._documents.delete_document(document_id, tenant_id, access_tags)
        if doc is None:
            raise NotFound(f"document {document_id} not found")
        return doc

    async def search(
        self,
        tenant_id: uuid.UUID,
        query: str,
        *,
        k: int = 10,
        filter: SearchFilter | None = None,
        mode: SearchMode = SearchMode.HYBRID,
        access_tags: AccessTags = None,
    ) -> Retrieval:
        scope = within(filter or SearchFilter(), access_tags)
        return await self._search.search(tenant_id, query, k=k, filter=scope, mode=mode)

    async def reindex(self) -> bool:
        """Rebuild the vector index without blocking writers; whether it had been missing."""
        return await self._documents.build_vector_index(concurrently=True)

    async def reembed(
        self, tenant_id: uuid.UUID | None, progress: ReembedProgressSink | None = None
    ) -> ReembedReport:
        """Embed every stored chunk again with the current `embed` model (of one tenant, or of
        all with None), one commit per document; rebuild the index afterwards with `reindex`."""
        return await self._reembedder.run(tenant_id, progress)
