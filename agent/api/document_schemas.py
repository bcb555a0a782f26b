"""The wire format of `/v1/documents` and `/v1/search`, and its mapping from domain types.

Public contract, changed only compatibly (see `agent.api.schemas`). Requests forbid unknown
fields and bound every string and list, so a malformed request is a 422 before any work starts.
"""

from __future__ import annotations

import binascii
import uuid
from base64 import b64decode
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    Json,
    JsonValue,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from agent.api.schemas import Model, Request, StorableObject, StorableText
from agent.domain import ChunkHit, Document, SearchPlan, StoredChunk
from agent.formats import MAX_DOCUMENT_BYTES, DocumentFormat
from agent.services.ingest import IngestOutcome
from agent.services.search import SearchMode

DOCUMENTS_PATH = "/v1/documents"
DOCUMENT_UPLOAD_PATHS = (DOCUMENTS_PATH, f"{DOCUMENTS_PATH}/batch")
"""The paths whose bodies may carry whole documents (`api.max_document_body_bytes`)."""
SEARCH_PATH = "/v1/search"
MAX_BATCH = 500
_ASCII_SPACE = b" \t\r\n"

Tag = Annotated[StorableText, StringConstraints(min_length=1, max_length=64)]


def _base64(value: object) -> bytes:
    # Empty is valid base64 (no bytes): an empty file, refused as one when it is read.
    if not isinstance(value, str):
        raise ValueError("must be a base64 string")
    # Strict (standard alphabet, padding), but line breaks as MIME and `base64` write are fine.
    compact = value.encode("ascii", "replace").translate(None, _ASCII_SPACE)
    try:
        return b64decode(compact, validate=True)
    except binascii.Error:
        raise ValueError("is not valid base64 (standard alphabet, with padding)") from None


Base64Document = Annotated[
    bytes,
    BeforeValidator(_base64),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]


class DocumentCreate(Request):
    title: Annotated[StorableText, Field(min_length=1, max_length=300)] | None = None
    """Default: the title the content declares (a Markdown heading, the HTML `<title>`, the PDF's
    metadata), else its first line."""
    text: Annotated[StorableText, Field(min_length=1, max_length=1_000_000)] | None = None
    """The document as text. Exactly one of `text` and `content_base64` is given."""
    content_base64: Base64Document | None = Field(
        default=None,
        description=(
            "The document's bytes (a PDF, or a text, Markdown or HTML file), base64-encoded, at "
            f"most {MAX_DOCUMENT_BYTES // 2**20} MiB decoded; read as `garrison docs add` reads "
            "a file. One that cannot be read (a corrupt PDF, a binary file, an empty one) is "
            "refused with `unreadable_document`, or reported in its batch item."
        ),
    )
    format: DocumentFormat | None = None
    """How to read the content: `text`, `markdown` (headings give structure), `html`, or `pdf`
    (bytes only). Default: `text` for `text`; for bytes, detected from their signature, then
    from the extension of `source`, else text."""

    @model_validator(mode="after")
    def _one_content(self) -> DocumentCreate:
        if (self.text is None) == (self.content_base64 is None):
            raise ValueError("give exactly one of `text` and `content_base64`")
        if self.text is not None and self.format is DocumentFormat.PDF:
            raise ValueError("a PDF is given as `content_base64`, not as `text`")
        return self

    metadata: StorableObject | None = None
    """Any JSON object up to 16 KiB, stored with the document and matched by search filters."""
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    """Access tags, matched by search filters (`tag`, `any_tag`)."""
    key: Annotated[StorableText, Field(min_length=1, max_length=2000)] | None = None
    """The document's identity in your tenant: posting the same key with other content replaces
    the document (a new version, same id). Default: `source`, else the content itself."""
    source: Annotated[StorableText, Field(min_length=1, max_length=2000)] | None = None
    """Where the document came from (a URL, a path). Keys (and sources used as keys) may take
    at most 2000 bytes as UTF-8."""


class DocumentBatch(Request):
    documents: list[DocumentCreate] = Field(min_length=1, max_length=MAX_BATCH)


class DocumentIngested(Model):
    id: uuid.UUID
    key: str
    title: str
    chunk_count: int
    content_hash: str
    version: int
    created: bool
    """True when the key was new."""
    updated: bool
    """True when the key held other content or labels, now replaced by this new version."""

    @classmethod
    def from_domain(cls, doc: Document, status: str) -> DocumentIngested:
        return cls(
            id=doc.id,
            key=doc.key,
            title=doc.title,
            chunk_count=doc.chunk_count,
            content_hash=doc.content_hash,
            version=doc.version,
            created=status == "created",
            updated=status == "updated",
        )


class BatchError(Model):
    code: str
    message: str


class BatchItem(Model):
    index: int
    """The document's position in the request."""
    status: Literal["created", "updated", "unchanged", "failed"]
    document: DocumentIngested | None
    error: BatchError | None
    """Why the document was not stored, when `status` is `failed`."""

    @classmethod
    def from_outcome(cls, index: int, outcome: IngestOutcome) -> BatchItem:
        doc = outcome.document
        return cls(
            index=index,
            status=outcome.status,
            document=None if doc is None else DocumentIngested.from_domain(doc, outcome.status),
            error=None
            if outcome.reason is None
            else BatchError(code=outcome.code or "invalid_document", message=outcome.reason),
        )


class BatchResult(Model):
    data: list[BatchItem]
    created: int
    updated: int
    unchanged: int
    failed: int


class DocumentOut(Model):
    id: uuid.UUID
    key: str
    title: str
    source: str | None
    metadata: dict[str, Any]
    tags: list[str]
    content_hash: str
    chunk_count: int
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_domain(cls, doc: Document) -> DocumentOut:
        return cls(
            id=doc.id,
            key=doc.key,
            title=doc.title,
            source=doc.source,
            metadata=doc.metadata,
            tags=list(doc.tags),
            content_hash=doc.content_hash,
            chunk_count=doc.chunk_count,
            version=doc.version,
            created_at=doc.created_at,
            updated_at=doc.updated_at,
        )


class DocumentList(Model):
    data: list[DocumentOut]


class ChunkOut(Model):
    id: int
    ordinal: int
    heading: str
    content: str

    @classmethod
    def from_domain(cls, chunk: StoredChunk) -> ChunkOut:
        return cls(id=chunk.id, ordinal=chunk.ordinal, heading=chunk.heading, content=chunk.content)


class ChunkList(Model):
    data: list[ChunkOut]


class SearchParams(Request):
    q: StorableText = Field(min_length=1, max_length=1000)
    """What to look for, in plain words; names, codes and numbers are matched as keywords too."""
    k: int = Field(default=10, ge=1, le=100)
    """How many passages: exactly `k` whenever that many are in scope."""
    mode: SearchMode = SearchMode.HYBRID
    """`hybrid` fuses vector and keyword results; `vector` ranks by embedding alone."""
    tag: list[Tag] = Field(default_factory=list, max_length=32)
    """Only documents carrying every one of these tags (repeat the parameter)."""
    any_tag: list[Tag] = Field(default_factory=list, max_length=32)
    """Only documents carrying at least one of these tags."""
    metadata: Json[dict[str, JsonValue]] | None = None
    """A JSON object the document's metadata must contain, e.g. `{"owner": "hr"}`."""


class SearchHit(Model):
    document_id: uuid.UUID
    document_version: int
    title: str
    source: str | None
    chunk_id: int
    ordinal: int
    heading: str
    score: float
    """What ranked the hit: fused reciprocal-rank score (hybrid) or cosine similarity."""
    similarity: float | None
    matched_by: list[str]
    snippet: str
    content: str

    @classmethod
    def from_domain(cls, hit: ChunkHit) -> SearchHit:
        return cls(
            document_id=hit.document_id,
            document_version=hit.document_version,
            title=hit.title,
            source=hit.source,
            chunk_id=hit.chunk_id,
            ordinal=hit.ordinal,
            heading=hit.heading,
            score=hit.score,
            similarity=hit.similarity,
            matched_by=list(hit.matched_by),
            snippet=hit.snippet,
            content=hit.content,
        )


class SearchPlanOut(Model):
    strategy: str
    """`hnsw` (iterative index scan) or `exact` (every row in scope)."""
    estimated_rows: int
    fell_back: bool

    @classmethod
    def from_domain(cls, plan: SearchPlan) -> SearchPlanOut:
        return cls(
            strategy=plan.strategy, estimated_rows=plan.estimated_rows, fell_back=plan.fell_back
        )


class SearchResults(Model):
    data: list[SearchHit]
    search: SearchPlanOut
