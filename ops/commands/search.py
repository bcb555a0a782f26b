"""`garrison search`, `garrison reindex` and `garrison calibrate`: what an agent would retrieve,
the vector index, re-embedding stored chunks after the embedding model changed, and measuring
each tenant's `ef_search` on its own chunks.

`search` runs the same search service as the agent's `search_documents` tool and `GET
/v1/search`, so an operator sees exactly what a run of that tenant would be shown (with a key
that has access tags, what a run it submits would be shown). `reindex` and `calibrate` are host
commands.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from agent.domain import SearchCalibration, SearchFilter
from agent.services.reembed import ReembedProgress, ReembedReport
from agent.services.search import SearchMode
from agent.services.search_tuning import MIN_QUESTIONS
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
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate/--no-calibrate",
            help="Afterwards, measure every tenant's ef_search on the new index (as `calibrate`).",
        ),
    ] = True,
    json_out: JsonFlag = False,
) -> None:
    """Rebuild the vector index (without blocking writers) and refresh search statistics.

    With --reembed, after the embedding model changed: every chunk (of one tenant, or of all) is
    embedded again through the embed role in batches, each document's new vectors committed at
    once, before the index is rebuilt. Searches keep working meanwhile, over a mix of old and
    new vectors until it ends. Then every tenant's ef_search is measured again (`calibrate`).
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
        if calibrate:
            # A new graph answers differently: measure every tenant on it now rather than at
            # the next drift.
            data["calibrated"] = await _calibrate_all(rt, out, None, None, None)
        out.emit(data, lambda: None)

    with_services(ctx, out, body)


@dataclass(frozen=True, slots=True)
class Calibrated:
    tenant: str
    calibration: SearchCalibration


def calibrate(
    ctx: typer.Context,
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", "-t", help="Only this tenant (default: all large enough)."),
    ] = None,
    target: Annotated[
        float | None,
        typer.Option(
            min=0.01, max=1.0, help="Recall@10 to reach (default: GARRISON_SEARCH_RECALL_TARGET)."
        ),
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option(
            min=10,
            max=10_000,
            help="Chunks to query with (default: GARRISON_SEARCH_TUNE_SAMPLE).",
        ),
    ] = None,
    questions: Annotated[
        Path | None,
        typer.Option(
            "--questions",
            exists=True,
            dir_okay=False,
            help=f"A file of questions, one per line ({MIN_QUESTIONS} or more), to measure with"
            " instead of the tenant's latest run inputs. Needs --tenant.",
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Measure the vector index's recall on each tenant's own chunks and choose its ef_search.

    For rising ef_search, recall@10 of the HNSW scan is measured against an exact scan, with a
    sample of the tenant's chunks as queries; the smallest value reaching the target is what the
    tenant's searches use from then on. Workers do this on their own when a tenant first grows
    past GARRISON_SEARCH_TUNE_MIN_CHUNKS and whenever its size drifts; this does it now.
    """
    asked: list[str] = []
    if questions is not None:
        if tenant is None:
            raise typer.BadParameter(
                "needs --tenant: questions are one tenant's", param_hint="--questions"
            )
        lines = questions.read_text(encoding="utf-8", errors="replace").splitlines()
        asked = [q.strip() for q in lines if q.strip()]
        if len(asked) < MIN_QUESTIONS:
            raise typer.BadParameter(
                f"{len(asked)} question(s); at least {MIN_QUESTIONS} measure anything",
                param_hint="--questions",
            )
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        found = await _calibrate_all(rt, out, tenant, target, sample, asked)

        def human() -> None:
            if not found:
                out.line("no tenant has enough chunks to measure (or the vector index is missing)")
            for c in found:
                out.line(_describe(c.tenant, c.calibration))

        out.emit(found, human)

    with_services(ctx, out, body)


async def _calibrate_all(
    rt: Runtime,
    out: Output,
    name: str | None,
    target: float | None,
    sample: int | None,
    questions: list[str] | None = None,
) -> list[Calibrated]:
    tenancy, tuning = rt.services.tenancy, rt.services.search_tuning
    if name is not None:
        tenants = [await tenancy.require_tenant(name)]
    else:
        measurable = set(await tuning.measurable())
        tenants = [t for t in await tenancy.list_tenants() if t.id in measurable]
    found: list[Calibrated] = []
    for t in tenants:
        with out.progress(f"measuring the recall of {t.name}'s searches") as step:
            calibration = await tuning.calibrate(
                t.id, target=target, sample=sample, questions=questions or ()
            )
            step.detail = (
                "nothing to measure"
                if calibration is None
                else (f"ef_search {calibration.ef_search}")
            )
        if calibration is not None:
            found.append(Calibrated(t.name, calibration))
    return found


def _describe(tenant: str, c: SearchCalibration) -> str:
    verdict = "reached" if c.met else "NOT reached (the largest ef_search tried)"
    lines = [
        f"{tenant}: ef_search {c.ef_search}, recall@{c.k} {c.recall:.3f}, target {c.target:.2f} "
        f"{verdict}; {c.sample} of its {c.chunks:,} chunks as queries"
    ]
    lines += [
        f"  ef_search {m.ef_search:>4}: recall@{c.k} {m.recall:.3f}, p50 {m.p50_ms:.2f} ms"
        for m in c.ladder
    ]
    return "\n".join(lines)


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
