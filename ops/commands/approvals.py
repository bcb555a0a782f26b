"""`garrison approvals list|show|approve|deny`: actions waiting for a person, for operators.

The local administrator's view across tenants (or one, with `--tenant`); with an approver key,
that key's tenant only, as through the API. Deciding here is the same as through the API: an
edit (`--arguments`) is validated and judged by the policy again, the decision is audited under
the caller (`cli:<user>` or `key:<id>`), and the run goes back to the queue.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.domain import Approval, ApprovalStatus
from ops.errors import CliError
from ops.output import JsonFlag, Output, clip, when
from ops.runtime import Runtime, with_services

app = typer.Typer(help="Approvals: actions a policy sent to a person; approve or deny them.")

ApprovalArg = Annotated[uuid.UUID, typer.Argument(help="The approval's id.")]
ARGUMENTS_CHARS = 200


def approval_json(approval: Approval) -> dict[str, Any]:
    return {
        "id": approval.id,
        "tenant_id": approval.tenant_id,
        "run_id": approval.run_id,
        "agent": approval.agent_name,
        "step": approval.step_number,
        "tool": approval.tool,
        "arguments": approval.arguments,
        "status": approval.status,
        "rule": approval.rule,
        "reason": approval.reason,
        "provenance": approval.provenance,
        "policy": approval.policy,
        "created_at": approval.created_at,
        "expires_at": approval.expires_at,
        "decided_at": approval.decided_at,
        "decided_by": approval.decided_by,
        "decision_reason": approval.decision_reason,
        "final_arguments": approval.final_arguments,
        "edited": approval.edited,
    }


@app.command("list")
def list_(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant.")] = None,
    status: Annotated[
        ApprovalStatus | None, typer.Option("--status", "-s", help="Only in this status.")
    ] = None,
    run: Annotated[uuid.UUID | None, typer.Option("--run", "-r", help="Only this run's.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 50,
    json_out: JsonFlag = False,
) -> None:
    """List approvals, newest first (`--status pending` is the queue)."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        svc = rt.services
        scope = rt.caller.scope(tenant)
        tenant_id = (await svc.tenancy.require_tenant(scope)).id if scope else None
        found = await svc.approvals.list(
            tenant_id, status=status, run_id=run, limit=limit, access_tags=rt.caller.access_tags
        )
        rows = [
            [
                str(a.id),
                a.status,
                f"{a.run_id}:{a.step_number}",
                a.tool,
                clip(a.rule or "", 30),
                when(a.expires_at) if a.status is ApprovalStatus.PENDING else when(a.decided_at),
            ]
            for a in found
        ]
        headers = ["ID", "STATUS", "RUN:STEP", "TOOL", "RULE", "EXPIRES/DECIDED"]
        out.emit(
            {"approvals": [approval_json(a) for a in found]},
            lambda: out.table(headers, rows, empty="no approvals"),
        )

    with_services(ctx, out, body)


@app.command("show")
def show(ctx: typer.Context, approval_id: ApprovalArg, json_out: JsonFlag = False) -> None:
    """Show what waits for a decision, why, and where its arguments came from."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        approval = await rt.services.approvals.get(
            approval_id, rt.caller.tenant_id, access_tags=rt.caller.access_tags
        )
        out.emit({"approval": approval_json(approval)}, lambda: _print(out, approval))

    with_services(ctx, out, body)


@app.command("approve")
def approve(
    ctx: typer.Context,
    approval_id: ApprovalArg,
    arguments: Annotated[
        str | None,
        typer.Option("--arguments", help="Edited arguments as a JSON object (checked again)."),
    ] = None,
    arguments_file: Annotated[
        Path | None, typer.Option("--arguments-file", help="The edited arguments, from a file.")
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", "-m")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Approve the action (as proposed, or edited); its run is queued again and runs it once."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        edited = _arguments(arguments, arguments_file)
        approval = await rt.services.approvals.approve(
            approval_id,
            rt.caller.tenant_id,
            actor=rt.caller.actor,
            arguments=edited,
            reason=reason,
            access_tags=rt.caller.access_tags,
        )
        said = "approved" + (" with edited arguments" if approval.edited else "")
        out.emit(
            {"approval": approval_json(approval)},
            lambda: out.line(f"approval {approval.id} {said}; run {approval.run_id} is queued"),
        )

    with_services(ctx, out, body)


@app.command("deny")
def deny(
    ctx: typer.Context,
    approval_id: ApprovalArg,
    reason: Annotated[str, typer.Option("--reason", "-m", help="Told to the model.")],
    json_out: JsonFlag = False,
) -> None:
    """Deny the action with a reason; the run goes on without it."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        caller = rt.caller
        approval = await rt.services.approvals.deny(
            approval_id,
            caller.tenant_id,
            actor=caller.actor,
            reason=reason,
            access_tags=caller.access_tags,
        )
        out.emit(
            {"approval": approval_json(approval)},
            lambda: out.line(f"approval {approval.id} denied; run {approval.run_id} is queued"),
        )

    with_services(ctx, out, body)


def _arguments(text: str | None, path: Path | None) -> dict[str, Any] | None:
    if text is not None and path is not None:
        raise CliError("usage", "give --arguments or --arguments-file, not both", 2)
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError("invalid_request", f"{path}: cannot read: {exc}") from None
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CliError("invalid_request", f"--arguments is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError("invalid_request", "--arguments must be a JSON object")
    return value


def _compact(value: Any) -> str:
    return clip(json.dumps(value, ensure_ascii=False, sort_keys=True), ARGUMENTS_CHARS)


def _print(out: Output, approval: Approval) -> None:
    pairs = [
        ("approval", f"{approval.id} ({approval.status})"),
        ("run", f"{approval.run_id} step {approval.step_number} (agent {approval.agent_name})"),
        ("action", f"{approval.tool} {_compact(approval.arguments)}"),
        ("why", f"{approval.reason or '-'} (rule {approval.rule or '-'})"),
        ("policy", _compact(approval.policy.get("version"))),
        ("created", when(approval.created_at)),
        ("expires", when(approval.expires_at)),
    ]
    for taint in approval.provenance:
        sources = ", ".join(taint.get("sources", []))
        pairs.append(("untrusted", f"{taint.get('where')} = {taint.get('value')!r} from {sources}"))
    if approval.decided_at is not None:
        pairs.append(("decided", f"{when(approval.decided_at)} by {approval.decided_by}"))
    if approval.decision_reason:
        pairs.append(("reason", approval.decision_reason))
    if approval.edited:
        pairs.append(("approved as", _compact(approval.final_arguments)))
    out.fields(pairs)
