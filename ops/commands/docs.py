"""`garrison docs add|list|show|delete`: a tenant's documents, from files and folders.

`add` reads text, Markdown, HTML and PDF files (folders recursively). A file that cannot be read
as a document (missing, binary, corrupt, empty, too large) is reported with its reason and
skipped; the others still go in, and the exit code says that something was skipped. A file's
path is its key, so adding it again after it changed replaces it (a new version), and adding it
unchanged does nothing: re-running after fixing the bad files only stores what is new.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.services.ingest import IngestOutcome, IngestProgress, PendingDocument
from ops.documents import estimated_bytes, expand, read_document
from ops.errors import CliError
from ops.output import JsonFlag, Output, clip, when
from ops.runtime import Runtime, with_services

app = typer.Typer(help="Documents: the text agents search, per tenant.")

TenantOption = Annotated[str, typer.Option("--tenant", "-t", help="The tenant they belong to.")]
PROGRESS_EVERY_S = 1.0
BYTES_PER_CHUNK = 1000
"""For estimating a load's size before reading it: ~200 tokens of ~5 characters per chunk."""


@dataclass
class FileOutcome:
    path: str
    status: str
    """`added`, `updated` (it changed: a new version), `unchanged` or `failed`."""
    title: str | None = None
    document_id: str | None = None
    version: int | None = None
    chunks: int | None = None
    reason: str | None = None


def parse_pairs(pairs: list[str], option: str) -> dict[str, Any]:
    """`KEY=VALUE` options as a dict; VALUE is JSON when it parses as JSON (3, true), else text."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=option)
        try:
            parsed[name] = json.loads(raw)
        except ValueError:
            parsed[name] = raw
    return parsed


@app.command("add")
def add(
    ctx: typer.Context,
    paths: Annotated[
        list[Path], typer.Argument(help="Files or folders (text, Markdown, HTML, PDF).")
    ],
    tenant: TenantOption,
    title: Annotated[
        str | None, typer.Option("--title", help="Title (one file only); default: its own.")
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="Identity (one file only); default: its path.")
    ] = None,
    tags: Annotated[list[str] | None, typer.Option("--tag", help="An access tag (repeat).")] = None,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="Metadata KEY=VALUE (repeat).")
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress", help="Progress on stderr; default: on a terminal."
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Add documents: read, chunk, embed and store each file; changed files get a new version."""
    files, ignored = expand(paths)
    single = len(files) == 1 and not paths[0].is_dir()
    for name, value in (("--title", title), ("--key", key)):
        if value is not None and not single:
            raise typer.BadParameter("applies to a single file", param_hint=name)
    metadata = parse_pairs(meta or [], "--meta")
    out = Output(json_out)
    show_progress = sys.stderr.isatty() if progress is None else progress

    async def body(rt: Runtime) -> None:
        target = await rt.services.tenancy.require_tenant(tenant)
        pending = [
            PendingDocument(
                str(path),
                lambda path=path: read_document(  # type: ignore[misc]
                    path, title, tags=tags or (), metadata=metadata, key=key
                ),
            )
            for path in files
        ]
        report = _Reporter(out, len(files), show_progress)
        outcomes = await rt.services.documents.ingest_many(
            target.id,
            pending,
            expected_chunks=estimated_bytes(files) // BYTES_PER_CHUNK,
            progress=report,
        )
        report.finish()
        _finish(out, tenant, [_file_outcome(o) for o in outcomes], ignored)

    with_services(ctx, out, body)


class _Reporter:
    """Prints each file's outcome as it is decided, and (if asked) a progress line now and then."""

    def __init__(self, out: Output, total: int, progress: bool) -> None:
        self._out = out
        self._total = total
        self._progress = progress
        self._last = time.monotonic()
        self._state: IngestProgress | None = None

    def __call__(self, state: IngestProgress) -> None:
        self._state = state
        for outcome in state.latest:
            self._out.line(_describe(_file_outcome(outcome)))
        if self._progress and time.monotonic() - self._last >= PROGRESS_EVERY_S:
            self._emit(state)

    def finish(self) -> None:
        if self._progress and self._state is not None:
            self._emit(self._state)

    def _emit(self, s: IngestProgress) -> None:
        self._last = time.monotonic()
        typer.echo(
            f"progress: {s.documents}/{self._total} file(s), {s.failed} failed, "
            f"{s.chunks} chunk(s) stored, {s.elapsed_s:.1f} s",
            err=True,
        )


def _file_outcome(o: IngestOutcome) -> FileOutcome:
    status = "added" if o.status == "created" else o.status
    outcome = FileOutcome(path=o.label, status=status, reason=o.reason)
    if o.document is not None:
        outcome.title, outcome.document_id = o.document.title, str(o.document.id)
        outcome.version, outcome.chunks = o.document.version, o.document.chunk_count
    return outcome


def _describe(o: FileOutcome) -> str:
    if o.status == "failed":
        return f"skipped    {o.path}: {o.reason}"
    return f"{o.status:<10} {o.path}: {o.title!r} (v{o.version}, {o.chunks} chunk(s))"


def _finish(out: Output, tenant: str, outcomes: list[FileOutcome], ignored: int) -> None:
    statuses = ("added", "updated", "unchanged", "failed")
    counts = {s: sum(o.status == s for o in outcomes) for s in statuses}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    out.emit(
        {"tenant": tenant, "files": outcomes, "ignored": ignored, **counts},
        lambda: out.line(
            f"{len(outcomes)} file(s) for tenant {tenant}: {summary}"
            + (f"; {ignored} other file(s) ignored" if ignored else "")
        ),
    )
    if counts["failed"]:
        raise CliError(
            "some_files_failed", f"{counts['failed']} of {len(outcomes)} file(s) skipped"
        )


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
        target = await rt.services.tenancy.require_tenant(tenant)
        docs = await rt.services.documents.list(target.id, limit, offset)
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
        target = await rt.services.tenancy.require_tenant(tenant)
        doc = await rt.services.documents.get(document_id, target.id)
        parts = await rt.services.documents.chunks(doc.id, target.id, chunks) if chunks else []

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
        target = await rt.services.tenancy.require_tenant(tenant)
        doc = await rt.services.documents.get(document_id, target.id)
        if not yes:
            _confirm(f"Delete document {doc.title!r} ({doc.chunk_count} chunks) of {tenant}?")
        deleted = await rt.services.documents.delete(doc.id, target.id)
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
