"""`garrison tenants create|list`: host commands (`ops.command_roles.HOST`), run without a key."""

from __future__ import annotations

from typing import Annotated

import typer

from agent.errors import NotFound
from ops.output import JsonFlag, Output, when
from ops.runtime import Runtime, with_services

app = typer.Typer(help="Tenants: the boundary every agent, key, document and run belongs to.")


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Lowercase letters, digits, '-' or '_'.")],
    json_out: JsonFlag = False,
) -> None:
    """Create a tenant (a no-op when it already exists)."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        try:
            tenant, created = await rt.services.tenancy.require_tenant(name), False
        except NotFound:
            tenant, created = (
                await rt.services.tenancy.create_tenant(name, actor=rt.caller.actor),
                True,
            )
        out.emit(
            {"tenant": tenant, "created": created},
            lambda: out.line(
                f"{'created' if created else 'already exists:'} tenant {tenant.name} ({tenant.id})"
            ),
        )

    with_services(ctx, out, body)


@app.command("list")
def list_(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """List tenants."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        tenants = await rt.services.tenancy.list_tenants()
        rows = [[t.name, str(t.id), when(t.created_at)] for t in tenants]
        out.emit(
            {"tenants": tenants},
            lambda: out.table(["NAME", "ID", "CREATED"], rows, empty="no tenants yet"),
        )

    with_services(ctx, out, body)
