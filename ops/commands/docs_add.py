"""`garrison docs add`: read files and folders, then store them through the ingestion pipeline.

Each file's outcome is printed as it is decided; `--progress` (default: on a terminal) adds a
running count on stderr for long loads. The exit code says whether any file was skipped.

With a key that has access tags, the `--tag`s must include one of them (`access_tag_required`,
before any file is read: the key could not see what it stored), and a file whose key holds a
document the key cannot see is skipped with that code rather than replacing it.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.services.access import require_access_tag
from agent.services.ingest import IngestOutcome, IngestProgress, PendingDocument
from ops.documents import estimated_bytes, expand, read_document
from ops.errors import CliError
from ops.output import JsonFlag, Output
from ops.runtime import Runtime, with_services

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
    code: str | None = None
    """Why it failed when that is not about the file itself (`access_tag_required`)."""


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
        target = await rt.services.tenancy.require_tenant(rt.caller.scope(tenant))
        # Every file gets the same tags, so one check refuses the whole load at once rather
        # than file by file (the ingestion checks each document again all the same).
        require_access_tag("the documents added (--tag)", tags or (), rt.caller.access_tags)
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
            access_tags=rt.caller.access_tags,
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
    outcome = FileOutcome(path=o.label, status=status, reason=o.reason, code=o.code)
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
