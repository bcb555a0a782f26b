"""`garrison runs replay|fork`: check a run against today's code, and fork it from a step.

`replay` is the upgrade check: it re-drives today's orchestration code over a run's recorded
model answers and tool results (no model call, no side effect, nothing written) and names the
first step where it decides differently; its exit status says whether there was one, so a
script can gate an upgrade on it. `fork` queues a new run with the first N steps copied; a
worker takes it from there, live. Both are the operator's view: any tenant's run (with a key,
the key's tenant's runs that its access tags cover; a fork is the key's, as through the API).
Registered on the `runs` app by `ops.commands.runs`.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer

from agent.domain import Run
from agent.replay_compare import ReplayReport
from ops.output import JsonFlag, Output, clip
from ops.runtime import Runtime, with_services

DIVERGED = 1
"""Exit status of `replay` when today's code decides differently (as for a caller error)."""
VALUE_CHARS = 120

RunArg = Annotated[uuid.UUID, typer.Argument(help="The run's id, as POST /v1/runs returned it.")]


def replay(ctx: typer.Context, run_id: RunArg, json_out: JsonFlag = False) -> None:
    """Re-drive today's code over a run's recorded steps and report the first divergence.

    No model is called, no tool runs and nothing is written. Exit status: 0 when today's code
    decides every recorded step as recorded, 1 when it diverges (and for errors such as an
    unknown run, which print error[...] on stderr instead of a report).
    """
    out = Output(json_out)
    reports: list[ReplayReport] = []

    async def body(rt: Runtime) -> None:
        report = await rt.services.replays.replay(
            run_id, rt.caller.tenant_id, access_tags=rt.caller.access_tags
        )
        reports.append(report)
        out.emit(report, lambda: _print_report(out, report))

    with_services(ctx, out, body)
    if reports and not reports[0].match:
        raise typer.Exit(DIVERGED)


def _print_report(out: Output, report: ReplayReport) -> None:
    d = report.divergence
    if d is None:
        out.line(
            f"run {report.run_id}: today's code decides as recorded "
            f"({report.steps_matched} of {report.steps_recorded} steps match)"
        )
        return
    out.line(f"run {report.run_id}: diverges at step {d.step} ({d.kind})")
    out.fields(
        [
            ("field", d.field),
            ("recorded", _value(d.recorded)),
            ("replayed", _value(d.replayed)),
            ("why", d.message),
            ("matched", f"{report.steps_matched} of {report.steps_recorded} steps before it"),
        ]
    )


def _value(value: Any) -> str:
    return "-" if value is None else clip(str(value), VALUE_CHARS)


def fork(
    ctx: typer.Context,
    run_id: RunArg,
    from_step: Annotated[
        int,
        typer.Option(
            "--from-step", "-n", help="Copy steps 1..N (0 copies none); the rest runs live."
        ),
    ],
    deployment: Annotated[
        str | None,
        typer.Option(
            "--deployment",
            "-d",
            help="Pin every decision of the fork to this deployment (`garrison models list`); "
            "default: the parent's pin, if any.",
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Start a new run from step N of a run: steps 1..N copied, the rest live.

    The fork is queued for a worker; the copied steps' side effects are not sent again.
    """
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        new = await rt.services.forks.fork(
            run_id,
            rt.caller.tenant_id,
            from_step=from_step,
            deployment=deployment,
            api_key_id=rt.caller.key_id,
            actor=rt.caller.actor,
            access_tags=rt.caller.access_tags,
        )
        out.emit({"run": _fork(new)}, lambda: _print_fork(out, new))

    with_services(ctx, out, body)


def _fork(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "tenant_id": run.tenant_id,
        "agent": run.agent_name,
        "status": run.status,
        "input": run.input,
        "steps": run.step_count,
        "parent_run_id": run.parent_run_id,
        "forked_from_step": run.forked_from_step,
        "deployment": run.deployment,
        "prompt_tokens": run.prompt_tokens,
        "completion_tokens": run.completion_tokens,
        "created_at": run.created_at,
    }


def _print_fork(out: Output, run: Run) -> None:
    copied = f"steps 1..{run.step_count} copied" if run.step_count else "no steps copied"
    pin = f", pinned to {run.deployment}" if run.deployment else ""
    out.line(f"run {run.id}: {run.status}, forked from {run.parent_run_id} ({copied}{pin})")
    out.line(f"follow it with `garrison runs show {run.id}`")
