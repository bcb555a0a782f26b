"""`garrison db upgrade|status`: the schema, migrated under the advisory lock."""

from __future__ import annotations

import asyncio

import typer

from agent.runtime import Settings
from datastore import migrate
from datastore.migrate import MigrationStatus
from ops.output import JsonFlag, Output
from ops.runtime import execute, gate_for, open_runtime

app = typer.Typer(help="The database schema: upgrade it, or see where it stands.")


def _payload(status: MigrationStatus) -> dict[str, object]:
    return {
        "current": status.current,
        "head": status.head,
        "pending": list(status.pending),
        "up_to_date": status.up_to_date,
    }


def _describe(out: Output, status: MigrationStatus) -> None:
    out.fields(
        [
            ("current", status.current or "none (empty database)"),
            ("head", status.head),
            ("pending", ", ".join(status.pending) or "none"),
        ],
        indent="",
    )


@app.command("upgrade")
def upgrade(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Apply pending migrations (safe to run from several processes at once)."""
    out = Output(json_out)

    async def main(settings: Settings) -> None:
        async with open_runtime(settings, schema="none", gate=gate_for(ctx)) as rt:
            before = await asyncio.to_thread(migrate.status, rt.url)
            after = await asyncio.to_thread(migrate.upgrade, rt.url)

        def human() -> None:
            applied = ", ".join(before.pending)
            out.line(f"applied {applied}" if applied else "already up to date")
            _describe(out, after)

        out.emit({**_payload(after), "applied": list(before.pending)}, human)

    execute(ctx, out, main)


@app.command("status")
def status(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Show the current revision, the head, and what is pending."""
    out = Output(json_out)

    async def main(settings: Settings) -> None:
        async with open_runtime(settings, schema="none", gate=gate_for(ctx)) as rt:
            current = await asyncio.to_thread(migrate.status, rt.url)
        out.emit(_payload(current), lambda: _describe(out, current))

    execute(ctx, out, main)
