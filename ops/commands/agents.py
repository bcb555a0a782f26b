"""`garrison agents put|list`: agent definitions, versioned on every change."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from agent.domain import AgentDefinition
from ops.output import JsonFlag, Output, clip, when
from ops.runtime import Runtime, with_services

app = typer.Typer(help="Agents: instructions, allowed tools and limits, per tenant.")


@app.command("put")
def put(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Argument(help="The tenant the agent belongs to.")],
    name: Annotated[str, typer.Argument(help="The agent's name, as clients address it.")],
    instructions: Annotated[
        str, typer.Option("--instructions", "-i", help="What the agent is for and how to answer.")
    ],
    tools: Annotated[
        list[str] | None,
        typer.Option("--tool", help="An allowed tool (repeat); default: search_documents, finish."),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Most loop iterations per run.")
    ] = None,
    retrieval_k: Annotated[
        int | None, typer.Option("--retrieval-k", help="Passages retrieved before step 1.")
    ] = None,
    parallel_calls: Annotated[
        int,
        typer.Option(
            "--parallel-calls",
            help="Tool calls the model may propose in one decision (1..8); several may then "
            "wait for approval side by side.",
        ),
    ] = 1,
    json_out: JsonFlag = False,
) -> None:
    """Create an agent, or replace its definition (its version goes up by one)."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        agent = await rt.services.tenancy.put_agent(
            rt.caller.scope(tenant),
            name,
            instructions=instructions,
            tools=tools,
            max_steps=max_steps,
            retrieval_k=retrieval_k,
            parallel_calls=parallel_calls,
            actor=rt.caller.actor,
        )

        def human() -> None:
            out.line(f"saved agent {tenant}/{agent.name} version {agent.version}")
            out.fields(
                [
                    ("tools", ", ".join(agent.allowed_tools)),
                    ("max steps", str(agent.max_steps)),
                    ("retrieval k", str(agent.retrieval_k)),
                    ("parallel calls", str(agent.parallel_calls)),
                ]
            )

        out.emit({"agent": _as_json(agent, tenant)}, human)

    with_services(ctx, out, body)


@app.command("list")
def list_(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """List agents with their current version."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        agents = await rt.services.tenancy.list_agents(rt.caller.scope(tenant))
        names = {t.id: t.name for t in await rt.services.tenancy.list_tenants()}
        rows = [
            [
                names.get(a.tenant_id, str(a.tenant_id)),
                a.name,
                str(a.version),
                ",".join(a.allowed_tools),
                str(a.max_steps),
                when(a.created_at),
                clip(a.instructions, 40),
            ]
            for a in agents
        ]
        headers = ["TENANT", "NAME", "VERSION", "TOOLS", "MAX STEPS", "CREATED", "INSTRUCTIONS"]
        out.emit(
            {"agents": [_as_json(a, names.get(a.tenant_id)) for a in agents]},
            lambda: out.table(headers, rows, empty="no agents yet"),
        )

    with_services(ctx, out, body)


def _as_json(agent: AgentDefinition, tenant: str | None) -> dict[str, object]:
    return {"tenant": tenant, **dataclasses.asdict(agent)}
