"""Ingesting documents (chunk, embed, store atomically) and reading them back."""

from __future__ import annotations

import hashlib
import json
import uuid

from agent.chunking import chunk_text
from agent.domain import JSON, Document, NewChunk
from agent.errors import CallerError, NotFound
from agent.ports import DocumentStore, Embedder
from agent.settings import AgentSettings

MAX_TEXT_CHARS = 1_000_000
MAX_METADATA_BYTES = 16_384


def content_hash(title: str, text: str) -> str:
    return hashlib.sha256(f"{title}\x00{text}".encode()).hexdigest()


class DocumentService:
    def __init__(
        self, documents: DocumentStore, embedder: Embedder, settings: AgentSettings
    ) -> None:
        self._documents = documents
        self._embedder = embedder
        self._settings = settings

    async def ingest(
        self,
        tenant_id: uuid.UUID,
        *,
        title: str,
        text: str,
        metadata: JSON | None = None,
        source: str | None = None,
    ) -> tuple[Document, bool]:
        """Store a document. Returns (document, created); the same content again is a no-op."""
        title = title.strip()
        if not title or len(title) > 300:
            raise CallerError("title must be 1-300 characters")
        if not text.strip():
            raise CallerError("text must not be empty")
        if len(text) > MAX_TEXT_CHARS:
            raise CallerError(f"text is longer than {MAX_TEXT_CHARS} characters")
        metadata = metadata or {}
        if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
            raise CallerError(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
        digest = content_hash(title, text)
        # Checked before embedding: re-ingesting unchanged content costs no model time.
        existing = await self._documents.find_document_by_hash(tenant_id, digest)
        if existing is not None:
            return existing, False
        pieces = chunk_text(
            text,
            max_chars=self._settings.chunk_chars,
            overlap_chars=self._settings.chunk_overlap_chars,
        )
        # The title is embedded with each chunk so a passage is found by what its document is.
        embedded = await self._embedder.embed([f"{title}\n\n{p}" for p in pieces])
        chunks = [
            NewChunk(ordinal=i, content=p, embedding=v)
            for i, (p, v) in enumerate(zip(pieces, embedded.vectors, strict=True))
        ]
        return await self._documents.insert_document(
            tenant_id,
            title=title,
            source=source,
            metadata=metadata,
            content_hash=digest,
            chunks=chunks,
        )

    async def get(self, document_id: uuid.UUID, tenant_id: uuid.UUID) -> Document:
        doc = await self._documents.get_document(document_id, tenant_id)
        if doc is None:
            raise NotFound(f"document {document_id} not found")
        return doc

    async def list(self, tenant_id: uuid.UUID, limit: int = 50) -> list[Document]:
        if not 1 <= limit <= 1000:
            raise CallerError("limit must be between 1 and 1000")
        return await self._documents.list_documents(tenant_id, limit)
