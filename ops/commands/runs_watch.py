"""`garrison runs watch ID`: follow one run's events live until it ends.

The same event stream as `GET /v1/runs/{id}/events` (any tenant's run; a key's own), printed
as one line per event for people or one JSON object per line with `--json`. A run that ends in
failure still exits 0: the watch itself worked; the failure is printed (on stderr with `--json`,
so stdout stays pure event lines).
"""

from __future__ import annotations

import json
import uuid
from contextlib import aclosing
from typing import Annotated, Any

import typer

from agent.domain import Run, RunStatus
from agent.events import Idle, RunEvent
from ops.output import Output
from ops.runtime import Runtime, with_services


def watch(
    ctx: typer.Context,
    run_id: Annotated[
        uuid.UUID, typer.Argument(help="The run's id, as POST /v1/runs returned it.")
    ],
    from_start: Annotated[
        bool,
        typer.Option(
            "--from-start/--from-now",
            help="Replay the run's events so far before the live ones (the default), or show "
            "only what happens from now on.",
        ),
    ] = True,
    # Not the usual JsonFlag: a watch prints a line per event, not one document.
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per event, one per line.")
    ] = False,
) -> None:
    """Follow a run's events (state changes, committed steps) until the run ends."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        # As with `runs show`: any tenant's run for the local administrator, for a key the runs
        # of its tenant that its access tags cover.
        access = rt.caller.access_tags
        opened = await rt.services.events.open(
            run_id, rt.caller.tenant_id, from_now=not from_start, access_tags=access
        )
        out.line(f"watching run {run_id} (agent {opened.run.agent_name})")
        async with aclosing(opened.follow()) as items:
            async for item in items:
                if isinstance(item, Idle):
                    continue
                if json_out:
                    typer.echo(json.dumps(event_json(item), ensure_ascii=False))
                else:
                    out.line(event_line(item))
        # The stream ends with the run; its outcome (output, failure) is on the run itself.
        _print_outcome(
            out, await rt.services.runs.get(run_id, rt.caller.tenant_id, access_tags=access)
        )

    with_services(ctx, out, body)


def event_json(event: RunEvent) -> dict[str, Any]:
    """The same fields as the API's `RunEventOut`."""
    return {
        "id": event.id,
        "run_id": str(event.run_id),
        "kind": event.kind,
        "status": event.status,
        "step": event.step_number,
        "created_at": event.created_at.isoformat(),
        "tool": event.tool,
        "error_code": event.error_code,
    }


def event_line(event: RunEvent) -> str:
    at = event.created_at.astimezone().strftime("%H:%M:%S")
    line = f"{at}  {event.kind:<5}  {event.status:<17}  step {event.step_number}"
    if event.tool is not None:
        line += f"  {event.tool}"
    if event.error_code is not None:
        line += f"  error {event.error_code}"
    return line.rstrip()


def _print_outcome(out: Output, run: Run) -> None:
    if not run.status.terminal:  # the stream was cut short (shutdown), not ended by the run
        return
    if run.status is RunStatus.SUCCEEDED:
        out.line(f"run {run.id} succeeded after {run.step_count} step(s)")
        return
    reason = f"{run.failure_code}: {run.failure_detail or ''}".rstrip(": ")
    out.say(f"run {run.id} {run.status}" + (f": {reason}" if run.failure_code else ""))
