"""`garrison outbox list|retry`: the side effects runs asked for, and a second chance for one.

`list` is the operator's view across tenants (or one tenant, or one run; with a key, the key's
tenant only): what each row is, where it stands, how many attempts it took and the last error.
`retry` puts a `failed` row back in line with a fresh set of attempts, for after the cause was
fixed (a relay configured, a host allowed, a receiver repaired); it is audited.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer

from agent.ports import OutboxItem, OutboxStatus
from ops.output import JsonFlag, Output, clip, when
from ops.runtime import Runtime, with_services

app = typer.Typer(help="Outbox: the emails and HTTP requests runs queued, and their delivery.")


@app.command("list")
def list_(
    ctx: typer.Context,
    run: Annotated[uuid.UUID | None, typer.Option("--run", "-r", help="Only this run's.")] = None,
    status: Annotated[
        OutboxStatus | None, typer.Option("--status", "-s", help="Only rows in this status.")
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 50,
    json_out: JsonFlag = False,
) -> None:
    """List outbox rows, newest first (a run's in step order)."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        svc = rt.services
        scope = rt.caller.scope(tenant)
        tenant_id = (await svc.tenancy.require_tenant(scope)).id if scope else None
        items = await svc.outbox.list(
            tenant_id, run_id=run, status=status, limit=limit, access_tags=rt.caller.access_tags
        )
        rows = [
            [
                str(i.id),
                i.kind,
                i.status,
                str(i.attempts),
                f"{i.run_id}:{i.step_number}",
                clip(target(i), 40),
                when(i.delivered_at) if i.delivered_at else when(i.next_attempt_at),
                clip(i.last_error or "", 50),
            ]
            for i in items
        ]
        headers = ["ID", "KIND", "STATUS", "ATTEMPTS", "RUN:STEP", "TO", "DONE/NEXT", "LAST ERROR"]
        out.emit(
            {"outbox": [item_json(i) for i in items]},
            lambda: out.table(headers, rows, empty="no outbox rows"),
        )

    with_services(ctx, out, body)


@app.command("retry")
def retry(
    ctx: typer.Context,
    item_id: Annotated[int, typer.Argument(help="The row's id, as `outbox list` shows it.")],
    json_out: JsonFlag = False,
) -> None:
    """Put a failed row back in line: pending, due now, attempts reset."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        caller = rt.caller
        item = await rt.services.outbox.retry(
            item_id, caller.tenant_id, actor=caller.actor, access_tags=caller.access_tags
        )
        out.emit(
            {"outbox": item_json(item)},
            lambda: out.line(
                f"outbox row {item.id} ({item.kind} to {clip(target(item), 60)}) is pending "
                "again; a running dispatcher (`garrison worker` or `up`) delivers it"
            ),
        )

    with_services(ctx, out, body)


def target(item: OutboxItem) -> str:
    """Where the side effect goes, for people."""
    if item.kind == "email":
        return ", ".join(item.payload.get("to", []))
    return f"{item.payload.get('method', '?')} {item.payload.get('url', '?')}"


def item_json(item: OutboxItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "tenant_id": item.tenant_id,
        "run_id": item.run_id,
        "step": item.step_number,
        "call_index": item.call_index,
        "idempotency_key": item.idempotency_key,
        "kind": item.kind,
        "payload": item.payload,
        "status": item.status,
        "attempts": item.attempts,
        "next_attempt_at": item.next_attempt_at,
        "last_error": item.last_error,
        "response": item.response,
        "created_at": item.created_at,
        "delivered_at": item.delivered_at,
    }
