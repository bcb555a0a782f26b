"""`garrison search` and `garrison reindex`: what an agent would retrieve, and the vector index.

`search` runs the same search service as the agent's `search_documents` tool and `GET
/v1/search`, so an operator sees exactly what a run of that tenant would be shown.
"""

from __future__ import annotations

from typing import Annotated

import typer

from agent.domain import SearchFilter
from agent.services.search import SearchMode
from ops.commands.docs_add import TenantOption, parse_pairs
from ops.output import JsonFlag, Output, clip
from ops.runtime import Runtime, with_services


def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to look for.")],
    tenant: TenantOption,
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="How many passages.")] = 5,
    tags: Annotated[
        list[str] | None, typer.Option("--tag", help="Documents with all these tags (repeat).")
    ] = None,
    any_tags: Annotated[
        list[str] | None, typer.Option("--any-tag", help="Documents with any of these tags.")
    ] = None,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="Metadata KEY=VALUE to match (repeat).")
    ] = None,
    mode: Annotated[SearchMode, typer.Option("--mode", help="hybrid or vector.")] = (
        SearchMode.HYBRID
    ),
    json_out: JsonFlag = False,
) -> None:
    """Search a tenant's documents as its agents do."""
    scope = SearchFilter(
        tags=tuple(tags or ()),
        any_tags=tuple(any_tags or ()),
        metadata=parse_pairs(meta or [], "--meta"),
    )
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        target = await rt.services.tenancy.require_tenant(tenant)
        found = await rt.services.documents.search(target.id, query, k=k, filter=scope, mode=mode)
        plan = found.result.plan

        def human() -> None:
            if not found.result.hits:
                out.line("no matching passages")
            for i, h in enumerate(found.result.hits, 1):
                where = f" [{h.heading}]" if h.heading else ""
                out.line(
                    f"[{i}] {h.score:.4f} {h.title}{where} (v{h.document_version}, "
                    f"chunk {h.ordinal}, {'+'.join(h.matched_by)})"
                )
                out.line(f"    {clip(h.snippet, 200)}")
            fell_back = ", fell back to exact" if plan.fell_back else ""
            out.line(f"({plan.strategy} scan over ~{plan.estimated_rows} chunk(s){fell_back})")

        out.emit({"hits": found.result.hits, "search": plan}, human)

    with_services(ctx, out, body)


def reindex(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Rebuild the vector index (without blocking writers) and refresh search statistics."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        with out.progress("rebuilding the vector index") as step:
            missing = await rt.services.documents.reindex()
            step.detail = "it was missing: built" if missing else "rebuilt"
        out.emit({"rebuilt": True, "was_missing": missing}, lambda: None)

    with_services(ctx, out, body)
