"""`garrison docs add|list|show|delete`: a tenant's documents, from files and folders.

`add` reads text, Markdown, HTML and PDF files (folders recursively). A file that cannot be read
as a document (missing, binary, corrupt, empty, too large) is reported with its reason and
skipped; the others still go in, and the exit code says that something was skipped. A file's
path is its key, so adding it again after it changed replaces it (a new version), and adding it
unchanged does nothing: re-running after fixing the bad files only stores what is new.

With a key that has access tags, every command sees only the documents carrying one of them,
as through the API (`agent.services.access`): another document is `not_found`.
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Annotated

import typer

from ops.commands.docs_add import TenantOption, add
from ops.errors import CliError
from ops.output import JsonFlag, Output, clip, when
from ops.runtime import Runtime, with_services

app = typer.Typer(help="Documents: the text agents search, per tenant.")
app.command("add")(add)


@app.command("list")
def list_(
    ctx: typer.Context,
    tenant: TenantOption,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    json_out: JsonFlag = False,
) -> None:
    """List a tenant's documents, newest first."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        target = await rt.services.tenancy.require_tenant(rt.caller.scope(tenant))
        docs = await rt.services.documents.list(
            target.id, limit, offset, access_tags=rt.caller.access_tags
        )
        rows = [
            [str(d.id), d.title, str(d.chunk_count), str(d.version), when(d.updated_at), d.key]
            for d in docs
        ]
        headers = ["ID", "TITLE", "CHUNKS", "VERSION", "UPDATED", "KEY"]
        out.emit({"documents": docs}, lambda: out.table(headers, rows, empty="no documents"))

    with_services(ctx, out, body)


@app.command("show")
def show(
    ctx: typer.Context,
    document_id: Annotated[uuid.UUID, typer.Argument(help="The document's id.")],
    tenant: TenantOption,
    chunks: Annotated[int, typer.Option("--chunks", min=0, max=1000, help="Chunks shown.")] = 20,
    json_out: JsonFlag = False,
) -> None:
    """Show a document: its key, version, labels and the chunks it was cut into."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        target = await rt.services.tenancy.require_tenant(rt.caller.scope(tenant))
        access = rt.caller.access_tags
        doc = await rt.services.documents.get(document_id, target.id, access_tags=access)
        parts = (
            await rt.services.documents.chunks(doc.id, target.id, chunks, access_tags=access)
            if chunks
            else []
        )

        def human() -> None:
            out.line(f"document {doc.id}")
            out.fields(
                [
                    ("title", doc.title),
                    ("key", doc.key),
                    ("source", doc.source or "-"),
                    ("version", f"{doc.version} (updated {when(doc.updated_at)})"),
                    ("tags", ", ".join(doc.tags) or "-"),
                    ("metadata", json.dumps(doc.metadata, ensure_ascii=False)),
                    ("chunks", str(doc.chunk_count)),
                ]
            )
            for c in parts:
                where = f" [{c.heading}]" if c.heading else ""
                out.line(f"  #{c.ordinal}{where} {clip(c.content, 100)}")

        out.emit({"document": doc, "chunks": parts}, human)

    with_services(ctx, out, body)


@app.command("delete")
def delete(
    ctx: typer.Context,
    document_id: Annotated[uuid.UUID, typer.Argument(help="The document's id.")],
    tenant: TenantOption,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Delete a document and its chunks."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        target = await rt.services.tenancy.require_tenant(rt.caller.scope(tenant))
        access = rt.caller.access_tags
        doc = await rt.services.documents.get(document_id, target.id, access_tags=access)
        if not yes:
            _confirm(f"Delete document {doc.title!r} ({doc.chunk_count} chunks) of {tenant}?")
        deleted = await rt.services.documents.delete(doc.id, target.id, access_tags=access)
        out.emit(
            {"deleted": deleted},
            lambda: out.line(f"deleted document {deleted.id} ({deleted.title!r})"),
        )

    with_services(ctx, out, body)


def _confirm(question: str) -> None:
    # Without a terminal nobody can answer; waiting on stdin would hang a script or CI job.
    if not sys.stdin.isatty():
        raise CliError(
            "confirmation_required",
            f"{question} Refusing without confirmation: no terminal to ask on; pass -y/--yes",
        )
    if not typer.confirm(question, err=True):  # stderr: stdout stays one JSON document
        raise CliError("cancelled", "not deleted")
