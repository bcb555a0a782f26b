"""`garrison search` and `garrison reindex`: what an agent would retrieve, the vector index, and
re-embedding stored chunks after the embedding model changed.

`search` runs the same search service as the agent's `search_documents` tool and `GET
/v1/search`, so an operator sees exactly what a run of that tenant would be shown (with a key
that has access tags, what a run it submits would be shown). `reindex` is a host command.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from agent.domain import SearchFilter
from agent.services.reembed import ReembedProgress, ReembedReport
from agent.services.search import SearchMode
from ops.commands.docs_add import PROGRESS_EVERY_S, TenantOption, parse_pairs
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
        target = await rt.services.tenancy.require_tenant(rt.caller.scope(tenant))
        found = await rt.services.documents.search(
            target.id, query, k=k, filter=scope, mode=mode, access_tags=rt.caller.access_tags
        )
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


def reindex(
    ctx: typer.Context,
    reembed: Annotated[
        bool,
        typer.Option(
            "--reembed",
            help="First embed every stored chunk again with the current embedding model.",
        ),
    ] = False,
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", "-t", help="With --reembed: only this tenant's documents."),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress", help="Progress on stderr; default: on a terminal."
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Rebuild the vector index (without blocking writers) and refresh search statistics.

    With --reembed, after the embedding model changed: every chunk (of one tenant, or of all) is
    embedded again through the embed role in batches, each document's new vectors committed at
    once, before the index is rebuilt. Searches keep working meanwhile, over a mix of old and
    new vectors until it ends.
    """
    if tenant is not None and not reembed:
        raise typer.BadParameter("applies only with --reembed", param_hint="--tenant")
    out = Output(json_out)
    show_progress = sys.stderr.isatty() if progress is None else progress

    async def body(rt: Runtime) -> None:
        documents = rt.services.documents
        report: ReembedReport | None = None
        if reembed:
            scope = None if tenant is None else (await rt.services.tenancy.require_tenant(tenant))
            sink = _ReembedProgress() if show_progress else None
            out.say(f"re-embedding the chunks of {tenant or 'every tenant'}")
            report = await documents.reembed(None if scope is None else scope.id, sink)
            if sink is not None:
                sink.finish()
            out.say(
                f"re-embedded {report.chunks} chunk(s) of {report.documents} document(s) in "
                f"{report.seconds:.1f} s with {report.model or '-'}; {report.skipped} changed "
                "meanwhile and were left as they were"
            )
        with out.progress("rebuilding the vector index") as step:
            missing = await documents.reindex()
            step.detail = "it was missing: built" if missing else "rebuilt"
        data: dict[str, object] = {"rebuilt": True, "was_missing": missing}
        if report is not None:
            data["reembedded"] = report
        out.emit(data, lambda: None)

    with_services(ctx, out, body)


class _ReembedProgress:
    """A running count on stderr, at most once a second (re-embedding takes minutes), and the
    final count at the end."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self._state: ReembedProgress | None = None

    def __call__(self, state: ReembedProgress) -> None:
        self._state = state
        if time.monotonic() - self._last >= PROGRESS_EVERY_S:
            self._emit(state)

    def finish(self) -> None:
        if self._state is not None:
            self._emit(self._state)

    def _emit(self, state: ReembedProgress) -> None:
        self._last = time.monotonic()
        rate = state.chunks / state.elapsed_s if state.elapsed_s else 0.0
        typer.echo(
            f"progress: {state.documents} document(s), {state.chunks} chunk(s) re-embedded "
            f"({rate:.0f}/s), {state.skipped} skipped, {state.elapsed_s:.0f} s",
            err=True,
        )
