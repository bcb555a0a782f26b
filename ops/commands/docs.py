"""`garrison docs add|list`: load plain-text and Markdown files into a tenant's documents.

A file that cannot be read as a document (missing, a directory, binary, not UTF-8, empty) is
reported with its reason and skipped; the others still go in, and the exit code says that
something was skipped. Ingestion is idempotent by content hash, so re-running after fixing the
bad files only adds what is new.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from agent.errors import CallerError
from ops.documents import UnreadableFile, read_document
from ops.errors import CliError
from ops.output import JsonFlag, Output, when
from ops.runtime import Runtime, with_services

app = typer.Typer(help="Documents: the text agents search, per tenant.")


@dataclass
class FileOutcome:
    path: str
    status: str
    """`added`, `unchanged` (the same content is already there) or `failed`."""
    title: str | None = None
    document_id: str | None = None
    chunks: int | None = None
    reason: str | None = None


@app.command("add")
def add(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="Plain-text or Markdown files.")],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="The tenant they belong to.")],
    title: Annotated[
        str | None, typer.Option("--title", help="Title (one file only); default: its heading.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Add documents: chunk, embed and store each file."""
    if title is not None and len(files) > 1:
        raise typer.BadParameter("applies to a single file", param_hint="--title")
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        svc = rt.services
        target = await svc.tenancy.require_tenant(tenant)
        outcomes: list[FileOutcome] = []
        for path in files:
            outcome = FileOutcome(path=str(path), status="failed")
            try:
                doc_title, text = read_document(path, title)
                doc, created = await svc.documents.ingest(
                    target.id,
                    title=doc_title,
                    text=text,
                    source=str(path.resolve()),
                    metadata={"filename": path.name, "bytes": len(text.encode())},
                )
            except (UnreadableFile, CallerError) as exc:
                outcome.reason = exc.reason if isinstance(exc, UnreadableFile) else exc.message
            else:
                outcome.status = "added" if created else "unchanged"
                outcome.title, outcome.document_id = doc.title, str(doc.id)
                outcome.chunks = doc.chunk_count
            outcomes.append(outcome)
            out.line(_describe(outcome))
        _finish(out, tenant, outcomes)

    with_services(ctx, out, body)


def _describe(o: FileOutcome) -> str:
    if o.status == "failed":
        return f"skipped    {o.path}: {o.reason}"
    return f"{o.status:<10} {o.path}: {o.title!r} ({o.chunks} chunk(s))"


def _finish(out: Output, tenant: str, outcomes: list[FileOutcome]) -> None:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("added", "unchanged", "failed")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    out.emit(
        {"tenant": tenant, "files": outcomes, **counts},
        lambda: out.line(f"{len(outcomes)} file(s) for tenant {tenant}: {summary}"),
    )
    if counts["failed"]:
        raise CliError(
            "some_files_failed", f"{counts['failed']} of {len(outcomes)} file(s) skipped"
        )


@app.command("list")
def list_(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="The tenant to list.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 50,
    json_out: JsonFlag = False,
) -> None:
    """List a tenant's documents, newest first."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        target = await rt.services.tenancy.require_tenant(tenant)
        docs = await rt.services.documents.list(target.id, limit)
        rows = [
            [str(d.id), d.title, str(d.chunk_count), when(d.created_at), d.source or ""]
            for d in docs
        ]
        headers = ["ID", "TITLE", "CHUNKS", "ADDED", "SOURCE"]
        out.emit({"documents": docs}, lambda: out.table(headers, rows, empty="no documents"))

    with_services(ctx, out, body)
