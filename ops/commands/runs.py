"""`garrison runs list|show|submit|cancel|resume`: runs across every tenant, and their lifecycle.

`show` is the operator's view of a run (with a key, of the key's tenant only, and of the runs
its access tags cover: `agent.services.access.sees_run`): what the model
was shown, what it answered on every attempt, what the code made of it, and what the tool
returned. Humans get a condensed page with long values clipped; `--json` gives every recorded
field in full. `submit`, `cancel` and `resume` go through the same service as the API, so they
obey the same transitions.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

import typer

from agent.domain import Run, RunStatus, Step
from ops.commands.runs_replay import fork, replay
from ops.commands.runs_watch import watch
from ops.errors import INFRASTRUCTURE, CliError
from ops.output import JsonFlag, Output, clip, when
from ops.runtime import Runtime, with_services

app = typer.Typer(help="Runs: submit, list, inspect step by step, cancel, resume.")

RunIdArg = Annotated[uuid.UUID, typer.Argument(help="The run's id, as POST /v1/runs returned it.")]

RESULT_CHARS = 300
"""How much of a tool result or model answer a person sees per line; --json has it all."""


@app.command("list")
def list_(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant.")] = None,
    status: Annotated[
        RunStatus | None, typer.Option("--status", "-s", help="Only runs in this status.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 20,
    json_out: JsonFlag = False,
) -> None:
    """List the most recent runs."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        svc = rt.services
        scope = rt.caller.scope(tenant)
        tenant_id = (await svc.tenancy.require_tenant(scope)).id if scope else None
        runs = await svc.runs.list(tenant_id, status, limit, access_tags=rt.caller.access_tags)
        names = {t.id: t.name for t in await svc.tenancy.list_tenants()}
        rows = [
            [
                str(r.id),
                names.get(r.tenant_id, "?"),
                r.agent_name,
                r.status,
                str(r.step_count),
                when(r.created_at),
                r.failure_code or "",
                clip(r.input, 40),
            ]
            for r in runs
        ]
        headers = ["ID", "TENANT", "AGENT", "STATUS", "STEPS", "CREATED", "FAILURE", "INPUT"]
        payload = {"runs": [{"tenant": names.get(r.tenant_id), **_run(r)} for r in runs]}
        out.emit(payload, lambda: out.table(headers, rows, empty="no runs"))

    with_services(ctx, out, body)


@app.command("show")
def show(ctx: typer.Context, run_id: RunIdArg, json_out: JsonFlag = False) -> None:
    """Show a run and every step it took."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        # The local administrator sees every tenant's runs (tenant_id None), a key its own
        # tenant's that its access tags cover.
        access = rt.caller.access_tags
        run = await rt.services.runs.get(run_id, rt.caller.tenant_id, access_tags=access)
        steps = await rt.services.runs.steps(run_id, rt.caller.tenant_id, access_tags=access)

        def human() -> None:
            _print_run(out, run)
            for step in steps:
                out.line()
                _print_step(out, step)

        out.emit({"run": _run(run), "steps": steps}, human)

    with_services(ctx, out, body)


@app.command("submit")
def submit(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(metavar="INPUT", help="The task, in plain language.")],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="The tenant it runs for.")],
    agent: Annotated[str, typer.Option("--agent", "-a", help="The tenant's agent to run.")],
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            "-k",
            help="Submitting again with this key returns the same run instead of a new one.",
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            "-w",
            help="Wait until the run ends or needs an operator; exit 1 unless it succeeded.",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds --wait waits at most.")
    ] = 300.0,
    json_out: JsonFlag = False,
) -> None:
    """Queue a run of an agent; a worker (`garrison worker` or `up`) drives it."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        svc = rt.services
        tenant_id = (await svc.tenancy.require_tenant(rt.caller.scope(tenant))).id
        # With a key, the run is the key's, as through the API: its budgets apply, and its
        # access tags go with the run and narrow every search it makes.
        access = rt.caller.access_tags
        submission = await svc.runs.request(
            tenant_id,
            agent,
            task,
            idempotency_key=idempotency_key,
            api_key_id=rt.caller.key_id,
            access_tags=access,
        )
        run = submission.run
        if submission.replayed:
            note = f"run {run.id} was already submitted with this idempotency key"
        else:
            note = f"run {run.id} queued"
        if wait:
            # On stderr: stdout carries only the result, and nothing when the wait fails.
            typer.echo(f"{note}; waiting for it to end (at most {timeout:g} s)", err=True)
            settled = await svc.runs.wait(run.id, tenant_id, timeout, access_tags=access)
            if settled is None:
                now = await svc.runs.get(run.id, tenant_id, access_tags=access)
                raise CliError(
                    "wait_timeout",
                    f"run {run.id} is still {now.status} after "
                    f"{timeout:g} s; is a worker running? (`garrison runs show {run.id}`)",
                    INFRASTRUCTURE,
                )
            run = settled

        def human() -> None:
            if not wait:
                out.line(note)
            _print_run(out, run)

        out.emit({"run": _run(run), "replayed": submission.replayed}, human)
        if wait and run.status != RunStatus.SUCCEEDED:
            raise typer.Exit(1)

    with_services(ctx, out, body)


@app.command("cancel")
def cancel(ctx: typer.Context, run_id: RunIdArg, json_out: JsonFlag = False) -> None:
    """Cancel a run. A running run stops after the step in progress; its steps are kept."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        caller = rt.caller
        run = await rt.services.runs.cancel(
            run_id, caller.tenant_id, actor=caller.actor, access_tags=caller.access_tags
        )

        def human() -> None:
            if run.status == RunStatus.CANCELLED:
                out.line(f"run {run.id} cancelled after {run.step_count} step(s)")
            else:
                out.line(f"run {run.id}: cancel requested; it stops after the step in progress")

        out.emit({"run": _run(run)}, human)

    with_services(ctx, out, body)


@app.command("resume")
def resume(ctx: typer.Context, run_id: RunIdArg, json_out: JsonFlag = False) -> None:
    """Queue a parked run again; it continues from its last committed step."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        caller = rt.caller
        run = await rt.services.runs.resume(
            run_id, caller.tenant_id, actor=caller.actor, access_tags=caller.access_tags
        )
        out.emit(
            {"run": _run(run)},
            lambda: out.line(f"run {run.id} queued again; it resumes after step {run.step_count}"),
        )

    with_services(ctx, out, body)


def _run(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "tenant_id": run.tenant_id,
        "agent": run.agent_name,
        "status": run.status,
        "input": run.input,
        "output": run.output,
        "failure_code": run.failure_code,
        "failure_detail": run.failure_detail,
        "steps": run.step_count,
        "attempts": run.attempts,
        "prompt_tokens": run.prompt_tokens,
        "completion_tokens": run.completion_tokens,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "cancel_requested_at": run.cancel_requested_at,
        "idempotency_key": run.idempotency_key,
        "parent_run_id": run.parent_run_id,
        "forked_from_step": run.forked_from_step,
        "deployment": run.deployment,
    }


def _print_run(out: Output, run: Run) -> None:
    out.line(f"run {run.id}: agent {run.agent_name}, {run.status}")
    pairs = [("input", clip(run.input, RESULT_CHARS))]
    if run.output is not None:
        pairs.append(("output", clip(run.output, RESULT_CHARS)))
    if run.failure_code is not None:
        pairs.append(("failure", f"{run.failure_code}: {run.failure_detail or ''}".rstrip(": ")))
    pairs += [
        ("tokens", f"{run.prompt_tokens} prompt + {run.completion_tokens} completion"),
        ("steps", f"{run.step_count} in {run.attempts} attempt(s)"),
        ("created", when(run.created_at)),
        ("started", _at(run.started_at, run.created_at, "queued")),
        ("finished", _at(run.finished_at, run.started_at, "ran")),
    ]
    if run.cancel_requested_at is not None:
        pairs.append(("cancel", f"requested {when(run.cancel_requested_at)}"))
    if run.idempotency_key is not None:
        pairs.append(("key", run.idempotency_key))
    if run.parent_run_id is not None:
        pairs.append(("forked", f"from run {run.parent_run_id} at step {run.forked_from_step}"))
    if run.deployment is not None:
        pairs.append(("deployment", run.deployment))
    out.fields(pairs)


def _at(at: datetime | None, since: datetime | None, what: str) -> str:
    if at is None:
        return "-"
    if since is None:
        return when(at)
    return f"{when(at)} ({what} {(at - since).total_seconds():.2f} s)"


def _print_step(out: Output, step: Step) -> None:
    timing = f"model {step.model_ms:.1f} ms, tool {step.tool_ms:.1f} ms"
    tokens = f"tokens {step.prompt_tokens}+{step.completion_tokens}"
    out.line(f"step {step.number}: {step.status} ({timing}, {tokens})")
    ctx = step.context
    passages = ctx.get("passages")
    summary = f"{ctx.get('messages', '?')} messages, {ctx.get('prompt_chars', '?')} prompt chars"
    if passages is not None:
        summary += f", {len(passages)} passage(s) retrieved"
    if ctx.get("retrieval_error"):
        summary += f" (retrieval failed: {ctx['retrieval_error']})"
    pairs = [("context", summary)]
    for p in passages or []:
        pairs.append(("", f"[{p.get('score', 0):.3f}] {p.get('title', '?')}"))
    for i, attempt in enumerate(step.decision.get("attempts", []), 1):
        pairs.append((f"attempt {i}", _attempt(attempt)))
    action = step.decision.get("action")
    if action is not None:
        arguments = clip(_compact(action.get("arguments", {})), RESULT_CHARS)
        pairs.append(("action", f"{action['tool']} {arguments}"))
    if step.result is not None:
        pairs.append(("result", clip(_compact(step.result), RESULT_CHARS)))
    if step.error_code is not None:
        pairs.append(("error", step.error_code))
    out.fields(pairs)


def _attempt(attempt: dict[str, Any]) -> str:
    if "raw" not in attempt:  # the call itself failed; nothing came back to parse
        return f"failed: {attempt.get('error')}: {attempt.get('detail', '')}"
    text = clip(attempt["raw"], RESULT_CHARS)
    meta = f"finish {attempt.get('finish_reason')}, {attempt.get('latency_ms', 0):.1f} ms"
    if attempt.get("error"):
        return f"{text} ({meta}) -> invalid: {attempt['error']}"
    return f"{text} ({meta})"


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


app.command("watch")(watch)
app.command("replay")(replay)
app.command("fork")(fork)
