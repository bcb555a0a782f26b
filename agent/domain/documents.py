"""Documents and search as the domain sees them: what ingestion writes, what retrieval returns."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from agent.domain.types import JSON


@dataclass(frozen=True, slots=True)
class Document:
    id: uuid.UUID
    """Stable across versions: replacing a document's content keeps its id."""
    tenant_id: uuid.UUID
    key: str
    """Its identity within the tenant: the external key, else its source, else its content hash."""
    title: str
    source: str | None
    metadata: JSON
    tags: tuple[str, ...]
    """Access tags: matched by search filters, and by the access tags of API keys."""
    content_hash: str
    chunk_count: int
    version: int
    """1 when first stored, +1 each time its content, metadata or tags change."""
    created_at: datetime
    updated_at: datetime


class WriteStatus(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class NewChunk:
    ordinal: int
    content: str
    embedding: list[float]
    heading: str = ""
    """The heading path of the section the chunk came from."""


@dataclass(frozen=True, slots=True)
class NewDocument:
    """One document to store under (tenant, key), replacing whatever the key held."""

    key: str
    title: str
    source: str | None
    metadata: JSON
    tags: tuple[str, ...]
    content_hash: str
    chunks: tuple[NewChunk, ...] | None
    """The new chunks; None when only metadata or tags changed and the stored chunks stay."""


@dataclass(frozen=True, slots=True)
class DocumentWrite:
    document: Document
    status: WriteStatus


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A chunk as stored, for reading a document back (no embedding)."""

    id: int
    ordinal: int
    heading: str
    content: str


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Which of a tenant's documents a search may return; empty means all of them."""

    tags: tuple[str, ...] = ()
    """The document carries every one of these tags."""
    any_tags: tuple[str, ...] = ()
    """The document carries at least one of these tags."""
    metadata: JSON = field(default_factory=dict)
    """The document's metadata contains this object (JSON containment, `@>`)."""
    access_tags: tuple[str, ...] | None = None
    """The caller's access scope (an API key's tags, or a run's snapshot of them): the document
    carries at least one of these, on top of every condition above; `()` matches nothing.
    None: the whole tenant. Set by the services from who is asking, never from a request."""

    @property
    def empty(self) -> bool:
        return not (self.tags or self.any_tags or self.metadata) and self.access_tags is None


@dataclass(frozen=True, slots=True)
class SearchQuery:
    tenant_id: uuid.UUID
    embedding: list[float]
    k: int
    text: str | None = None
    """The query's words for the keyword half of hybrid search; None searches by vector only."""
    filter: SearchFilter = field(default_factory=SearchFilter)


@dataclass(frozen=True, slots=True)
class ChunkHit:
    chunk_id: int
    document_id: uuid.UUID
    title: str
    ordinal: int
    content: str
    score: float
    """The ranking score: cosine similarity for vector search, the fused RRF score for hybrid."""
    similarity: float | None = None
    """Cosine similarity in [-1, 1] of the chunk to the query, whatever ranked it."""
    heading: str = ""
    source: str | None = None
    document_version: int = 1
    snippet: str = ""
    """The matching passage: around the keyword match, else the start of the chunk."""
    matched_by: tuple[str, ...] = ("vector",)
    """Which searches found it: "vector", "keyword" or both."""


@dataclass(frozen=True, slots=True)
class SearchPlan:
    """How a search was executed, recorded with its results so a trace explains them."""

    strategy: str
    """`hnsw` (iterative index scan) or `exact` (distances over every row in scope)."""
    estimated_rows: int
    """Chunks the tenant and filter were estimated to leave in scope."""
    fell_back: bool = False
    """The index scan found fewer rows than exist, so an exact scan answered instead."""
    ef_search: int | None = None
    """The candidates the HNSW scan kept (the tenant's calibrated `ef_search`); None when no
    index scan ran."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[ChunkHit]
    plan: SearchPlan


@dataclass(frozen=True, slots=True)
class EfMeasure:
    """Recall and latency of the HNSW scan at one `ef_search`, on a calibration's sample."""

    ef_search: int
    recall: float
    """Mean recall@k against an exact scan of the same rows."""
    p50_ms: float


@dataclass(frozen=True, slots=True)
class SearchCalibration:
    """The `ef_search` chosen for a tenant's searches from recall measured on its own chunks."""

    tenant_id: uuid.UUID
    ef_search: int
    recall: float
    """Measured at `ef_search`; below `target` only when no `ef_search` tried reached it."""
    target: float
    sample: int
    """Queries measured."""
    source: str
    """What the queries were: "questions" (asked of the tenant's agents, or given by an
    operator) or "mixed chunks" (sums of two of its chunks, for want of questions)."""
    chunks: int
    """The tenant's chunks when it was measured (a later drift calls for measuring again)."""
    measured_at: datetime
    ladder: tuple[EfMeasure, ...]
    """Every `ef_search` tried, ascending; the last is the chosen one."""
    k: int
    """Recall was measured for the top k: searches asking for more rows keep proportionally
    more candidates (`datastore.repos.search_tuning.ef_for_rows`)."""

    @property
    def met(self) -> bool:
        return self.recall >= self.target
