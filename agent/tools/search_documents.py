"""`search_documents`: hybrid (vector + keyword) search over the run's tenant's documents.

Arguments are bounded (string lengths, list sizes) because the model fills them under guided
decoding, where an unbounded string can run to `max_tokens` and cut the JSON off. The result
records each hit's document, version, chunk, scores and snippet, and how the search ran, so the
step shows exactly what was retrieved.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from agent.domain import SearchFilter
from agent.services.search import SearchService, metadata_condition
from agent.tools.base import Tool, ToolArguments, ToolContext, ToolResult

SNIPPET_CHARS = 600


CONDITION_PATTERN = r"^[A-Za-z0-9_.-]{1,64}=[^\n]{1,120}$"
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64)]
# Plain bounded strings, not an object with free keys: every guided-decoding backend handles
# them, and the schema stays free of $refs that would not resolve inside the action schema.
# The "field=value" shape is a pattern in the schema itself, not only a validator: guided
# decoding then cannot produce a condition that validation would reject (schema-valid must
# mean valid, or a small model burns its retries on answers the engine allowed).
Condition = Annotated[
    str, StringConstraints(min_length=3, max_length=200, pattern=CONDITION_PATTERN)
]


class SearchArgs(ToolArguments):
    query: str = Field(min_length=1, max_length=300, description="What to look for.")
    k: int = Field(default=4, ge=1, le=10, description="How many passages to return.")
    tags: list[Tag] = Field(
        default_factory=list, max_length=4, description="Only documents carrying all these tags."
    )
    where: list[Condition] = Field(
        default_factory=list,
        max_length=4,
        description='Only documents whose metadata matches, e.g. ["owner=hr"]; all must hold.',
    )


class SearchDocuments(Tool[SearchArgs]):
    name = "search_documents"
    description = "Search the organisation's documents and return the most relevant passages."
    arguments = SearchArgs

    async def run(self, args: SearchArgs, ctx: ToolContext) -> ToolResult:
        search = SearchService(ctx.documents, ctx.embedder)
        found = await search.search(
            ctx.tenant_id,
            args.query,
            k=args.k,
            filter=SearchFilter(
                tags=tuple(args.tags),
                any_tags=ctx.search_tags,  # the policy's data scope, never the model's choice
                metadata=dict(map(metadata_condition, args.where)),
                access_tags=ctx.access_tags,  # the submitting key's scope, likewise
            ),
        )
        plan = found.result.plan
        return ToolResult(
            data={
                "hits": [
                    {
                        "chunk_id": h.chunk_id,
                        "document_id": str(h.document_id),
                        "document_version": h.document_version,
                        "title": h.title,
                        "heading": h.heading,
                        "score": round(h.score, 4),
                        "similarity": round(h.similarity, 4) if h.similarity is not None else None,
                        "matched_by": list(h.matched_by),
                        "snippet": h.snippet[:SNIPPET_CHARS],
                    }
                    for h in found.result.hits
                ],
                "search": {"strategy": plan.strategy, "estimated_rows": plan.estimated_rows},
            },
            prompt_tokens=found.prompt_tokens,
        )
