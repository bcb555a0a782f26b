"""Searching a tenant's documents: the one entry point for the agent's tool, the API and the CLI.

Validates the request, embeds the query through the serving layer's embed role, and asks the
store for vector or hybrid (vector + keyword, fused) results. The tenant comes from the caller's
principal or run, never from the request body, and every store query is scoped to it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agent.domain import SearchFilter, SearchQuery, SearchResult
from agent.errors import CallerError
from agent.ports import Embedder, SearchStore
from agent.services.document_input import MAX_TAG_CHARS, MAX_TAGS

MAX_QUERY_CHARS = 1000
MAX_K = 100
MAX_FILTER_BYTES = 4096


class SearchMode(StrEnum):
    HYBRID = "hybrid"
    """Vector and keyword results fused: finds names, codes and numbers embeddings miss."""
    VECTOR = "vector"


@dataclass(frozen=True, slots=True)
class Retrieval:
    result: SearchResult
    prompt_tokens: int
    """Embedding tokens the query cost."""


class SearchService:
    def __init__(self, store: SearchStore, embedder: Embedder) -> None:
        self._store = store
        self._embedder = embedder

    async def search(
        self,
        tenant_id: uuid.UUID,
        query: str,
        *,
        k: int = 10,
        filter: SearchFilter | None = None,
        mode: SearchMode = SearchMode.HYBRID,
    ) -> Retrieval:
        query = query.strip()
        if not query or len(query) > MAX_QUERY_CHARS:
            raise CallerError(f"the query must be 1-{MAX_QUERY_CHARS} characters")
        if not 1 <= k <= MAX_K:
            raise CallerError(f"k must be between 1 and {MAX_K}")
        scope = check_filter(filter or SearchFilter())
        embedded = await self._embedder.embed([query])
        result = await self._store.search(
            SearchQuery(
                tenant_id=tenant_id,
                embedding=embedded.vectors[0],
                k=k,
                text=query if mode is SearchMode.HYBRID else None,
                filter=scope,
            )
        )
        return Retrieval(result, embedded.usage.prompt_tokens)


def check_filter(f: SearchFilter) -> SearchFilter:
    for tags in (f.tags, f.any_tags, f.access_tags or ()):
        if len(tags) > MAX_TAGS or any(not t or len(t) > MAX_TAG_CHARS for t in tags):
            raise CallerError(f"at most {MAX_TAGS} tags of 1-{MAX_TAG_CHARS} characters each")
    if len(json.dumps(f.metadata)) > MAX_FILTER_BYTES:
        raise CallerError(f"the metadata filter is larger than {MAX_FILTER_BYTES} bytes")
    return f


def metadata_condition(text: str) -> tuple[str, Any]:
    """`"field=value"` as a metadata filter entry; the value is JSON when it parses as JSON
    (`version=3` matches the number 3, `draft=true` the boolean), else the text itself."""
    name, _, raw = text.partition("=")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name.strip(), value
