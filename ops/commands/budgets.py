"""`garrison budgets set|clear|show`: limits on tokens, steps, tool calls and wall time.

A budget applies to a tenant, one of its API keys (`--key`) or one of its agents (`--agent`),
either per run or per UTC day (`--per`). `set` replaces the scope's limits for that period (a
limit not given is unlimited); `show` lists the budgets with each daily one's use today (or on
`--day`): tokens used, tokens held by model calls in flight, steps and tool calls.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import typer

from agent.budgets.model import BudgetRule, DailyUsage, Limits, Period
from agent.budgets.service import BudgetStatus
from ops.output import JsonFlag, Output, when
from ops.runtime import Runtime, with_services

app = typer.Typer(help="Budgets: tokens, steps, tool calls and wall time, per run or per day.")

KeyOption = Annotated[
    str | None, typer.Option("--key", "-k", help="An API key of the tenant (its id or name).")
]
AgentOption = Annotated[str | None, typer.Option("--agent", "-a", help="An agent of the tenant.")]
PerOption = Annotated[
    Period, typer.Option("--per", help="`day` (UTC, all runs together) or `run` (each run).")
]


@app.command("set")
def set_(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Argument(help="The tenant the budget belongs to.")],
    key: KeyOption = None,
    agent: AgentOption = None,
    per: PerOption = Period.DAY,
    tokens: Annotated[
        int | None, typer.Option("--tokens", help="Model tokens (prompt + completion).")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Loop steps.")] = None,
    tool_calls: Annotated[
        int | None, typer.Option("--tool-calls", help="Tool calls (`finish` is not one).")
    ] = None,
    wall_time: Annotated[
        float | None,
        typer.Option("--wall-time", help="Seconds from the run's start (with --per run only)."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Set a budget (replacing the scope's limits for that period)."""
    out = Output(json_out)
    limits = Limits(tokens=tokens, steps=steps, tool_calls=tool_calls, wall_s=wall_time)

    async def body(rt: Runtime) -> None:
        rule = await rt.services.budgets.set(
            rt.caller.scope(tenant),
            period=per,
            limits=limits,
            key=key,
            agent=agent,
            actor=rt.caller.actor,
        )

        def human() -> None:
            out.line(f"set {rule.describe()} (tenant {tenant})")
            out.fields(_limit_cells(rule.limits))

        out.emit({"budget": _rule_json(rule, tenant)}, human)

    with_services(ctx, out, body)


@app.command("clear")
def clear(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Argument(help="The tenant the budget belongs to.")],
    key: KeyOption = None,
    agent: AgentOption = None,
    per: PerOption = Period.DAY,
    json_out: JsonFlag = False,
) -> None:
    """Remove a budget: the scope is unlimited for that period again."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        rule = await rt.services.budgets.clear(
            rt.caller.scope(tenant), period=per, key=key, agent=agent, actor=rt.caller.actor
        )
        out.emit(
            {"cleared": _rule_json(rule, tenant)},
            lambda: out.line(f"cleared {rule.describe()} (tenant {tenant})"),
        )

    with_services(ctx, out, body)


@app.command("show")
def show(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant.")] = None,
    day: Annotated[
        str | None, typer.Option("--day", help="The UTC day whose use to show (YYYY-MM-DD).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """List budgets with their use: `used/limit` per dimension (daily ones on the given day)."""
    out = Output(json_out)
    on = _day(day) if day else None

    async def body(rt: Runtime) -> None:
        statuses = await rt.services.budgets.show(rt.caller.scope(tenant), on)
        names = {t.id: t.name for t in await rt.services.tenancy.list_tenants()}
        rows = [
            [
                names.get(s.rule.tenant_id, str(s.rule.tenant_id)),
                f"{s.rule.scope.kind.value} {s.rule.label}",
                s.rule.period.value,
                *_use_cells(s),
                when(s.rule.updated_at),
            ]
            for s in statuses
        ]
        headers = ["TENANT", "SCOPE", "PER", "TOKENS", "STEPS", "TOOL CALLS", "WALL", "UPDATED"]
        shown_day = statuses[0].usage.day if statuses and statuses[0].usage else on

        def human() -> None:
            out.table(headers, rows, empty="no budgets set: every run is unlimited")
            if any(s.usage for s in statuses):
                out.line(f"daily use on {shown_day or 'today'} (UTC); `+n held` = reserved")

        out.emit(
            {"budgets": [_status_json(s, names.get(s.rule.tenant_id)) for s in statuses]}, human
        )

    with_services(ctx, out, body)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD)", param_hint="--day"
        ) from None


def _limit_cells(limits: Limits) -> list[tuple[str, str]]:
    def cell(value: float | None, unit: str = "") -> str:
        return "unlimited" if value is None else f"{value:g}{unit}"

    return [
        ("tokens", cell(limits.tokens)),
        ("steps", cell(limits.steps)),
        ("tool calls", cell(limits.tool_calls)),
        ("wall time", cell(limits.wall_s, " s")),
    ]


def _use_cells(status: BudgetStatus) -> list[str]:
    limits, usage = status.rule.limits, status.usage
    if usage is None:  # per run: the limits only
        return [value if value != "unlimited" else "-" for _, value in _limit_cells(limits)]

    def cell(used: int, limit: int | None, held: int = 0) -> str:
        text = f"{used}/{'-' if limit is None else limit}"
        return f"{text} (+{held} held)" if held else text

    return [
        cell(usage.tokens_used, limits.tokens, usage.tokens_reserved),
        cell(usage.steps_used, limits.steps),
        cell(usage.tool_calls_used, limits.tool_calls),
        "-",
    ]


def _rule_json(rule: BudgetRule, tenant: str | None) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "tenant_id": rule.tenant_id,
        "scope": rule.scope.kind.value,
        "subject": rule.label,
        "subject_id": rule.scope.subject_id,
        "period": rule.period.value,
        "limits": {
            "tokens": rule.limits.tokens,
            "steps": rule.limits.steps,
            "tool_calls": rule.limits.tool_calls,
            "wall_s": rule.limits.wall_s,
        },
        "updated_at": rule.updated_at,
    }


def _usage_json(usage: DailyUsage) -> dict[str, Any]:
    return {
        "day": usage.day.isoformat(),
        "tokens_used": usage.tokens_used,
        "tokens_reserved": usage.tokens_reserved,
        "steps_used": usage.steps_used,
        "tool_calls_used": usage.tool_calls_used,
    }


def _status_json(status: BudgetStatus, tenant: str | None) -> dict[str, Any]:
    usage = None if status.usage is None else _usage_json(status.usage)
    return {**_rule_json(status.rule, tenant), "usage": usage}
