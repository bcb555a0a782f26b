"""What a caller hands in for ingestion, and turning it into a valid, chunked document.

Pure: no I/O, so it runs in a worker thread beside the event loop and is tested without a
database. Validation failures are `CallerError`s with a message fit for a per-document report.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from agent.chunking import Chunk, chunk_document
from agent.domain import JSON, Document, NewChunk, NewDocument
from agent.errors import CallerError
from agent.formats import MAX_TITLE_CHARS, DocumentFormat, clean_title, parse_text
from agent.settings import AgentSettings

MAX_TEXT_CHARS = 5_000_000
MAX_METADATA_BYTES = 16_384
MAX_KEY_BYTES = 2000
"""Keys are unique per tenant through a btree index, whose entries must stay under ~2.7 kB."""
MAX_TAGS = 32
MAX_TAG_CHARS = 64
FALLBACK_TITLE_CHARS = 80


@dataclass(frozen=True, slots=True)
class DocumentInput:
    text: str
    title: str | None = None
    """None: the title the content declares (first heading, <title>), else its first line."""
    format: DocumentFormat = DocumentFormat.TEXT
    """How to read `text`: text, markdown or html (PDFs are turned into text before)."""
    metadata: JSON = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    key: str | None = None
    """The document's identity in its tenant; default: `source`, else the content hash."""
    source: str | None = None


@dataclass(frozen=True, slots=True)
class PreparedDocument:
    label: str
    key: str
    title: str
    source: str | None
    metadata: JSON
    tags: tuple[str, ...]
    content_hash: str
    chunks: tuple[Chunk, ...]

    def content_changed(self, stored: Document | None) -> bool:
        return stored is None or stored.content_hash != self.content_hash

    def labels_changed(self, stored: Document) -> bool:
        return (stored.source, stored.metadata, stored.tags) != (
            self.source,
            self.metadata,
            self.tags,
        )

    def embedding_inputs(self) -> list[str]:
        return [embedding_input(self.title, c.heading, c.text) for c in self.chunks]

    def new_document(self, vectors: list[list[float]] | None) -> NewDocument:
        """The document to store: with its chunks embedded, or (None) keeping the stored ones."""
        chunks = None
        if vectors is not None:
            chunks = tuple(
                NewChunk(i, c.text, v, c.heading)
                for i, (c, v) in enumerate(zip(self.chunks, vectors, strict=True))
            )
        return NewDocument(
            key=self.key,
            title=self.title,
            source=self.source,
            metadata=self.metadata,
            tags=self.tags,
            content_hash=self.content_hash,
            chunks=chunks,
        )


def content_hash(title: str, text: str) -> str:
    return hashlib.sha256(f"{title}\x00{text}".encode()).hexdigest()


def prepare(label: str, given: DocumentInput, settings: AgentSettings) -> PreparedDocument:
    if len(given.text) > MAX_TEXT_CHARS:
        raise CallerError(f"text is longer than {MAX_TEXT_CHARS} characters")
    parsed = parse_text(given.text, given.format)
    # NUL cannot be stored in Postgres text; extracted PDF text sometimes carries it.
    text = parsed.text.replace("\x00", "")
    if given.title is not None and not 1 <= len(given.title.strip()) <= MAX_TITLE_CHARS:
        raise CallerError(f"title must be 1-{MAX_TITLE_CHARS} characters")
    title = clean_title(given.title) or parsed.title or _first_line(text)
    if not title:
        raise CallerError("the document has no title and no text to take one from")
    metadata = given.metadata or {}
    if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        raise CallerError(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    digest = content_hash(title, text)
    key = given.key or given.source or f"sha256:{digest}"
    if len(key.encode()) > MAX_KEY_BYTES:
        raise CallerError(f"the document key (or source) is longer than {MAX_KEY_BYTES} bytes")
    chunks = chunk_document(
        text, max_tokens=settings.chunk_tokens, overlap_tokens=settings.chunk_overlap_tokens
    )
    if not chunks:
        raise CallerError("the document has no text")
    return PreparedDocument(
        label=label,
        key=key,
        title=title,
        source=given.source,
        metadata=metadata,
        tags=normalize_tags(given.tags),
        content_hash=digest,
        chunks=tuple(chunks),
    )


def normalize_tags(tags: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Stripped, distinct and sorted, so the same set of tags always compares equal."""
    clean = sorted({t.strip() for t in tags})
    if len(clean) > MAX_TAGS:
        raise CallerError(f"at most {MAX_TAGS} tags")
    if any(not t or len(t) > MAX_TAG_CHARS for t in clean):
        raise CallerError(f"tags must be 1-{MAX_TAG_CHARS} characters")
    return tuple(clean)


def _first_line(text: str) -> str | None:
    for line in text.splitlines():
        if line.strip():
            return clean_title(line.strip().lstrip("#").strip()[:FALLBACK_TITLE_CHARS])
    return None


def embedding_input(title: str, heading: str, text: str) -> str:
    """What is embedded for a chunk, at ingestion and when re-embedding stored chunks.

    The title (and section) go with each chunk: a passage is found by what it is part of.
    """
    return f"{title}\n{heading}\n\n{text}" if heading else f"{title}\n\n{text}"
