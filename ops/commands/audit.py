"""`garrison audit verify|export`: prove the audit log is intact, and take a copy of it.

`verify` recomputes the hash chain from the first entry and names the first entry that breaks
it, with a stable code (`audit_entry_altered`, `audit_chain_broken`, `audit_anchor_mismatch`)
and exit status 1; it prints the head (id:hash) to note down and pass back later as `--anchor`,
which also catches a log cut short or rewritten wholesale. It also counts governed steps that
lack their entry (a worker died between the step's commit and its append) and names the oldest:
those that finished within `MISSING_GRACE_S` are pending (the workers' audit sweep appends them
within a minute) and do not fail it; older ones mean no sweep is running, and fail it
(`audit_entry_missing`, exit status 1): the log does not yet link every governed action.

`export` streams entries as JSON lines, oldest first, to stdout or a file (written beside it and
renamed when complete), with progress on stderr for big logs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from agent.domain import AuditEntry, ChainReport
from agent.policy.audit_sweep import MISSING_GRACE_S
from agent.ports.governance import MissingEntries
from agent.services.audit import Anchor
from ops.errors import USAGE, CliError
from ops.output import JsonFlag, Output, when
from ops.runtime import Runtime, with_services

app = typer.Typer(help="The audit log: every administrator's change, hash-chained.")

BROKEN = 1
"""Exit status of `verify` when the chain does not hold."""
PROGRESS_EVERY = 10_000
"""Entries between two progress lines; smaller logs print none."""
PAGE = 2000
"""Entries read per round trip, walking the log oldest first."""
MISSING_SHOWN = 5
"""Steps lacking their entry that `verify` names (oldest first); it counts them all."""
MISSING = "audit_entry_missing"


class ExportFormat(StrEnum):
    JSONL = "jsonl"


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(
            "invalid_since",
            f"--since {value!r} is not an ISO 8601 date or time (e.g. 2026-01-31 or "
            "2026-01-31T08:00:00+00:00)",
            USAGE,
        ) from None
    # A time without a zone is the operator's local time, as `garrison` prints times.
    return parsed if parsed.tzinfo is not None else parsed.astimezone()


def _progress(label: str, total: int | None = None) -> Callable[[int], None]:
    """A callback taking the running count; prints a line to stderr every PROGRESS_EVERY."""
    shown = [0]

    def report(done: int) -> None:
        if done - shown[0] >= PROGRESS_EVERY:
            shown[0] = done - done % PROGRESS_EVERY
            of = f" of {total}" if total is not None else ""
            typer.echo(f"{label} {done}{of} entries ...", err=True)

    return report


@app.command("verify")
def verify(
    ctx: typer.Context,
    anchor: Annotated[
        str | None,
        typer.Option(
            "--anchor",
            "-a",
            help="ENTRY_ID:HASH noted from an earlier verify: that entry must still carry it.",
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Recompute the audit log's hash chain, and look for governed steps without their entry;
    exit 1 naming the first entry that breaks the chain, or the steps long left unaudited."""
    out = Output(json_out)
    reports: list[tuple[ChainReport, MissingEntries]] = []

    async def body(rt: Runtime) -> None:
        given = Anchor.parse(anchor) if anchor is not None else None
        report = await rt.services.audit.verify(given, _progress("verified"), batch=PAGE)
        missing = await rt.services.audit_sweep.missing(MISSING_SHOWN)
        reports.append((report, missing))
        out.emit(
            _report_json(report, missing),
            lambda: _print_all(out, report, missing),
        )

    with_services(ctx, out, body)
    if not reports:
        return
    report, missing = reports[0]
    if report.broken is not None:
        out.error(report.broken.code, report.broken.message)
        raise typer.Exit(BROKEN)
    if missing.overdue:
        out.error(
            MISSING,
            f"{missing.overdue} governed steps finished over {MISSING_GRACE_S:g} s ago without "
            "their audit entry: start a worker (`garrison worker`), whose audit sweep appends them",
        )
        raise typer.Exit(BROKEN)


def _report_json(report: ChainReport, missing: MissingEntries) -> dict[str, Any]:
    head = None
    if report.head_id is not None:
        head = {"id": report.head_id, "hash": report.head_hash}
    return {
        "ok": report.ok and not missing.overdue,
        "checked": report.checked,
        "head": head,
        "broken": report.broken,
        "missing": {
            "code": MISSING,
            "count": missing.count,
            "overdue": missing.overdue,
            "first": [
                {
                    "object_id": f"{m.run_id}:{m.number}",
                    "run_id": str(m.run_id),
                    "step": m.number,
                    "tenant_id": str(m.tenant_id),
                    "finished_at": m.finished_at.astimezone(UTC).isoformat(),
                }
                for m in missing.first
            ],
        },
    }


def _print_all(out: Output, report: ChainReport, missing: MissingEntries) -> None:
    _print_report(out, report)
    _print_missing(out, missing)


def _print_missing(out: Output, missing: MissingEntries) -> None:
    if not missing.count:
        return
    pending = missing.count - missing.overdue
    out.line(
        f"{missing.count} governed steps lack their audit entry ({MISSING}): {missing.overdue} "
        f"overdue, {pending} pending the workers' audit sweep"
    )
    for m in missing.first:
        out.line(f"  run {m.run_id} step {m.number} (finished {when(m.finished_at)})")


def _print_report(out: Output, report: ChainReport) -> None:
    if report.broken is None:
        if report.head_id is None:
            out.line("the audit log is empty")
            return
        out.line(f"audit chain intact: {report.checked} entries verified")
    else:
        out.line(f"audit chain BROKEN at entry {report.broken.entry_id} ({report.broken.code})")
        out.line(f"  intact before it: {report.checked - 1} entries")
    if report.head_id is not None:
        what = "head" if report.broken is None else "last intact entry"
        out.line(f"  {what}: {report.head_id}:{report.head_hash}")
        if report.broken is None:
            out.line("  (note it down; `garrison audit verify --anchor` it later)")


@app.command("export")
def export(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option("--since", "-s", help="Only entries at or after this ISO 8601 date/time."),
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant.")] = None,
    format_: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="jsonl: one JSON object per line.")
    ] = ExportFormat.JSONL,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file instead of stdout."),
    ] = None,
) -> None:
    """Stream audit entries, oldest first, as JSON lines (with each entry's hashes)."""
    out = Output(False)

    async def body(rt: Runtime) -> None:
        start = _since(since)
        audit = rt.services.audit
        selection = await audit.select(since=start, tenant=tenant)
        names = await audit.tenant_names()
        progress = _progress("exported", selection.total)
        written = 0
        with _destination(output) as sink:
            async for page in audit.pages(selection, batch=PAGE):
                for entry in page:
                    sink.write(json.dumps(entry_json(entry, names), ensure_ascii=False) + "\n")
                written += len(page)
                progress(written)
        where = f" to {output}" if output is not None else ""
        typer.echo(f"exported {written} audit entries ({format_}){where}", err=True)

    with_services(ctx, out, body)


@contextmanager
def _destination(path: Path | None) -> Iterator[IO[str]]:
    """stdout, or a file that appears under its name only once complete: an export cut short
    never looks like a whole one."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    partial = path.with_name(path.name + ".partial")
    try:
        file = partial.open("w", encoding="utf-8")
    except OSError as exc:
        raise CliError("output_unwritable", f"cannot write {path}: {exc.strerror}") from None
    try:
        with file:
            yield file
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)


def entry_json(entry: AuditEntry, names: dict[Any, str]) -> dict[str, Any]:
    created = entry.created_at.astimezone(UTC).isoformat() if entry.created_at else None
    return {
        "id": entry.id,
        "created_at": created,
        "tenant_id": str(entry.tenant_id) if entry.tenant_id else None,
        "tenant": names.get(entry.tenant_id) if entry.tenant_id else None,
        "actor": entry.actor,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "detail": entry.detail,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }
