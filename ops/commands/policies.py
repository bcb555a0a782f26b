"""`garrison policies apply|show|diff|history|test`: a tenant's (or one agent's) policy file.

`apply` validates the file (every problem with its line), then stores it as the scope's next
version, audited; the same file again changes nothing. Runs pick a new version up at their next
claim. `test FILE --against-runs` judges recent runs' recorded actions under the draft and lists
each step whose verdict would change, without storing or executing anything. It reads every
recent run of the tenant, whatever scope it ran under, so a key with access tags may not run it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from agent.domain import PolicyRecord
from agent.errors import Forbidden
from agent.policy.service import scope_label
from agent.policy.whatif import VerdictChange, WhatIf
from ops.errors import CliError
from ops.output import JsonFlag, Output, clip, when
from ops.runtime import Runtime, with_services

app = typer.Typer(help="Policies: what agents may do, versioned per tenant and agent.")

FileArg = Annotated[Path, typer.Argument(help="A policy file (TOML).", show_default=False)]
Tenant = Annotated[str, typer.Option("--tenant", "-t", help="The tenant the policy governs.")]
Agent = Annotated[
    str | None,
    typer.Option("--agent", "-a", help="One of the tenant's agents (default: the whole tenant)."),
]


def read_policy(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CliError("invalid_policy", f"{path}: cannot read the policy file: {reason}") from None


def record_json(record: PolicyRecord, *, source: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": record.id,
        "tenant_id": record.tenant_id,
        "agent": record.agent_name,
        "version": record.version,
        "sha256": record.sha256,
        "applied_by": record.applied_by,
        "applied_at": record.applied_at,
        "document": record.document,
    }
    if source:
        data["source"] = record.source
    return data


@app.command("apply")
def apply(
    ctx: typer.Context,
    path: FileArg,
    tenant: Tenant,
    agent: Agent = None,
    json_out: JsonFlag = False,
) -> None:
    """Validate FILE and make it the tenant's (or agent's) policy from the next claim on."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        source = read_policy(path)
        applied = await rt.services.policies.apply(
            rt.caller.scope(tenant), agent, source, name=str(path), actor=rt.caller.actor
        )
        label = scope_label(tenant, agent)
        version = applied.record.version
        said = (
            f"{label}: policy version {version} applied"
            if applied.created
            else f"{label}: unchanged, version {version} already has this content"
        )
        out.emit(
            {"created": applied.created, "policy": record_json(applied.record, source=False)},
            lambda: out.line(said),
        )

    with_services(ctx, out, body)


@app.command("show")
def show(
    ctx: typer.Context,
    tenant: Tenant,
    agent: Agent = None,
    version: Annotated[
        int | None, typer.Option("--version", "-v", min=1, help="Default: the newest.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Print a stored policy: its source as applied, and who applied it when."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        record = await rt.services.policies.show(rt.caller.scope(tenant), agent, version)

        def human() -> None:
            out.line(
                f"# {scope_label(tenant, agent)} policy version {record.version}, applied "
                f"{when(record.applied_at)} by {record.applied_by}"
            )
            out.line(record.source.rstrip("\n"))

        out.emit({"policy": record_json(record)}, human)

    with_services(ctx, out, body)


@app.command("diff")
def diff(
    ctx: typer.Context,
    tenant: Tenant,
    path: Annotated[
        Path | None,
        typer.Argument(help="A draft file to compare with the stored policy.", show_default=False),
    ] = None,
    agent: Agent = None,
    from_version: Annotated[int | None, typer.Option("--from", min=1)] = None,
    to_version: Annotated[int | None, typer.Option("--to", min=1)] = None,
    json_out: JsonFlag = False,
) -> None:
    """Diff FILE against the stored policy (or `--from` version), or two stored versions
    (default: the newest against the one before)."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        if path is not None and to_version is not None:
            raise CliError("usage", "--to compares stored versions; give no FILE with it", 2)
        draft = (str(path), read_policy(path)) if path is not None else None
        found = await rt.services.policies.diff(
            rt.caller.scope(tenant),
            agent,
            draft=draft,
            from_version=from_version,
            to_version=to_version,
        )

        def human() -> None:
            out.line(found.text.rstrip("\n") or f"no difference: {found.before} = {found.after}")

        out.emit(
            {"from": found.before, "to": found.after, "changed": bool(found.text),
             "diff": found.text},
            human,
        )  # fmt: skip

    with_services(ctx, out, body)


@app.command("history")
def history(
    ctx: typer.Context, tenant: Tenant, agent: Agent = None, json_out: JsonFlag = False
) -> None:
    """Every version of the tenant's (or agent's) policy, newest first."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        records = await rt.services.policies.history(rt.caller.scope(tenant), agent)
        rows = [
            [
                str(r.version),
                when(r.applied_at),
                r.applied_by,
                r.sha256[:12],
                str(len(r.document.get("rules", []))),
                clip(r.document.get("description", ""), 50),
            ]
            for r in records
        ]
        headers = ["VERSION", "APPLIED", "BY", "SHA256", "RULES", "DESCRIPTION"]
        out.emit(
            {"policies": [record_json(r, source=False) for r in records]},
            lambda: out.table(headers, rows, empty=f"{scope_label(tenant, agent)} has no policy"),
        )

    with_services(ctx, out, body)


@app.command("test")
def trial(
    ctx: typer.Context,
    path: FileArg,
    against_runs: Annotated[
        bool,
        typer.Option("--against-runs", help="Judge recorded runs' actions (the only mode)."),
    ] = False,
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help="Only this tenant's runs.")
    ] = None,
    agent: Agent = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=1000, help="The most recent runs.")
    ] = 100,
    json_out: JsonFlag = False,
) -> None:
    """What FILE would decide differently about recorded runs' actions, step by step."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        if not against_runs:
            raise CliError("usage", "say what to test against: --against-runs", 2)
        if rt.caller.access_tags is not None:
            # The report shows the arguments of the runs it judges, and it judges them all: a
            # restricted key would read runs it may not see (`agent.services.access.sees_run`).
            raise Forbidden(
                "`garrison policies test` judges every recent run of the tenant, including runs "
                "this API key's access tags do not cover; use a key without access tags"
            )
        source = read_policy(path)
        report = await rt.services.policies.test(
            source, name=str(path), tenant_name=rt.caller.scope(tenant), agent=agent, limit=limit
        )
        out.emit(_report_json(report), lambda: _print_report(out, report))

    with_services(ctx, out, body)


def _verdict(record: dict[str, Any]) -> str:
    rule = record.get("rule")
    return f"{record.get('verdict')} ({rule})" if rule else str(record.get("verdict"))


def _print_report(out: Output, report: WhatIf) -> None:
    rows = [
        [
            f"{c.run_id}:{c.step}",
            c.tool,
            _verdict(c.recorded),
            _verdict(c.draft),
            clip(str(c.draft.get("reason") or ""), 60),
        ]
        for c in report.changes
    ]
    out.table(["RUN:STEP", "TOOL", "RECORDED", "DRAFT", "WHY"], rows, empty="")
    changed = len(report.changes)
    out.line(
        f"{changed} of {report.steps} recorded action(s) in {report.runs} run(s) would be "
        f"decided differently" if changed else
        f"no change: the draft decides all {report.steps} recorded action(s) in {report.runs} "
        "run(s) as recorded"
    )  # fmt: skip


def _change_json(change: VerdictChange) -> dict[str, Any]:
    return {
        "run_id": change.run_id,
        "step": change.step,
        "tool": change.tool,
        "arguments": change.arguments,
        "recorded": change.recorded,
        "draft": change.draft,
    }


def _report_json(report: WhatIf) -> dict[str, Any]:
    return {
        "runs": report.runs,
        "steps": report.steps,
        "changed": len(report.changes),
        "changes": [_change_json(c) for c in report.changes],
    }
