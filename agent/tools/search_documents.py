"""`search_documents`: vector search over the tenant's chunks."""

from __future__ import annotations

from pydantic import Field

from agent.tools.base import Tool, ToolArguments, ToolContext, ToolResult

SNIPPET_CHARS = 600


class SearchArgs(ToolArguments):
    query: str = Field(min_length=1, max_length=300, description="What to look for.")
    k: int = Field(default=4, ge=1, le=10, description="How many passages to return.")


class SearchDocuments(Tool[SearchArgs]):
    name = "search_documents"
    description = "Search the organisation's documents and return the most relevant passages."
    arguments = SearchArgs

    async def run(self, args: SearchArgs, ctx: ToolContext) -> ToolResult:
        embedded = await ctx.embedder.embed([args.query])
        hits = await ctx.documents.search_chunks(ctx.tenant_id, embedded.vectors[0], args.k)
        return ToolResult(
            data={
                "hits": [
                    {
                        "chunk_id": h.chunk_id,
                        "document_id": str(h.document_id),
                        "title": h.title,
                        "score": round(h.score, 4),
                        "snippet": h.content[:SNIPPET_CHARS],
                    }
                    for h in hits
                ]
            },
            prompt_tokens=embedded.usage.prompt_tokens,
        )
