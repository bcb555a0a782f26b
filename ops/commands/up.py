"""`garrison up` (the whole appliance in one process) and `garrison serve` (the API only).

`up` is the first command anyone runs, so it narrates: where the database is, whether the
models answer and what that means, how to send a first run. The machinery it narrates over
(binding, serving, stopping) is `ops.appliance`; the demo content is `ops.seed`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from agent.domain import ModelSync
from agent.runtime import ComponentHealth, Settings, describe
from ops.output import JsonFlag, Output
from ops.runtime import Runtime, execute, gate_for, open_runtime
from ops.seed import DEMO_AGENT, DEMO_QUESTION, DEMO_TENANT, SeedReport, demo_tools, seed_demo

HostOption = Annotated[
    str | None, typer.Option("--host", help="Address to listen on [default: GARRISON_API_HOST]")
]
PortOption = Annotated[
    int | None,
    typer.Option("--port", min=0, max=65535, help="Port [default: GARRISON_API_PORT, 8600]"),
]
JsonLogsFlag = Annotated[
    bool, typer.Option("--json-logs", help="Write logs to stderr as JSON lines.")
]

MODEL_HINTS = {
    "chat_model": (
        "chat",
        "GARRISON_CHAT_URL",
        "runs will fail with model_unavailable",
    ),
    "embed_model": (
        "embedding",
        "GARRISON_EMBED_URL",
        "document search and `garrison docs add` fail with model_unavailable",
    ),
}


def up(
    ctx: typer.Context,
    host: HostOption = None,
    port: PortOption = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Run the API only; workers run elsewhere.")
    ] = False,
    no_demo: Annotated[
        bool, typer.Option("--no-demo", help="Do not create or refresh the demo tenant.")
    ] = False,
    json_logs: JsonLogsFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Run the appliance: database, migrations, demo, API and a worker, until Ctrl-C."""
    out = Output(json_out)
    started = time.perf_counter()

    async def main(settings: Settings) -> None:
        # Imported on use: the API stack (FastAPI, uvicorn) adds ~0.3 s to every start, which
        # commands that never serve should not pay.
        from ops.appliance import run_until_stopped, serving_process
        from ops.engines_up import bring_up

        host_ = host or settings.api.host
        with serving_process(out, host_, _port(settings, port), json_logs) as (stop, sock):
            async with (
                contextlib.AsyncExitStack() as stack,
                open_runtime(
                    settings, schema="upgrade", gate=gate_for(ctx), progress=out.progress
                ) as rt,
            ):
                with out.progress("recording the model registry") as step:
                    step.detail = _synced(await rt.services.catalog.sync(actor=rt.caller.actor))
                engines = await bring_up(rt.settings, out)
                stack.push_async_callback(engines.stop, out)
                health = await rt.services.health()
                _report_models(out, rt.settings, health)
                # A stop asked for during startup is honoured between phases.
                seed = None
                if not no_demo and not stop.requested.is_set():
                    seed = await _seed(out, rt, health)
                if not stop.requested.is_set():
                    url = _api_url(sock)
                    await run_until_stopped(
                        rt.services,
                        rt.settings,
                        rt.url,
                        stop,
                        out,
                        api_socket=sock,
                        worker=None if no_worker else rt.services.worker(),
                        dispatcher=None if no_worker else rt.services.dispatcher(),
                        on_ready=lambda: _ready(out, rt, url, started, seed, health, no_worker),
                    )
        out.say("stopped")

    execute(ctx, out, main)


def serve(
    ctx: typer.Context,
    host: HostOption = None,
    port: PortOption = None,
    json_logs: JsonLogsFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Run the API only (for deployments with separate `garrison worker` processes)."""
    out = Output(json_out)
    started = time.perf_counter()

    async def main(settings: Settings) -> None:
        # Imported on use: the API stack (FastAPI, uvicorn) adds ~0.3 s to every start, which
        # commands that never serve should not pay.
        from ops.appliance import run_until_stopped, serving_process

        host_ = host or settings.api.host
        with serving_process(out, host_, _port(settings, port), json_logs) as (stop, sock):
            gate = gate_for(ctx)
            async with open_runtime(
                settings, schema="auto", gate=gate, progress=out.progress
            ) as rt:
                if stop.requested.is_set():
                    out.say("stopped before the API started")
                    return
                url = _api_url(sock)

                def ready() -> None:
                    elapsed = time.perf_counter() - started
                    out.emit(
                        {"status": "ready", "api_url": url, "ready_s": round(elapsed, 3)},
                        lambda: out.line(f"API ready in {elapsed:.1f} s at {url}"),
                    )

                await run_until_stopped(
                    rt.services, rt.settings, rt.url, stop, out,
                    api_socket=sock, worker=None, on_ready=ready,
                )  # fmt: skip
        out.say("stopped")

    execute(ctx, out, main)


def _port(settings: Settings, port: int | None) -> int:
    return settings.api.port if port is None else port


def _api_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", ""):  # noqa: S104 - reading the bound address, not binding
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _report_models(out: Output, settings: Settings, health: list[ComponentHealth]) -> None:
    configured = {
        "chat_model": settings.serving.chat_url,
        "embed_model": settings.serving.embed_url,
    }
    for component in health:
        if component.name not in MODEL_HINTS:
            continue
        kind, variable, consequence = MODEL_HINTS[component.name]
        if component.ok:
            out.say(f"{kind} model {component.detail}")
        elif settings.serving.models_file is not None:
            out.say(f"no {kind} model reachable ({component.detail}); until then {consequence}")
        elif configured[component.name] is None:
            out.say(
                f"no {kind} model reachable: set {variable} to an OpenAI-compatible endpoint "
                f"(e.g. vLLM at http://127.0.0.1:8001/v1); until then {consequence}"
            )
        else:
            out.say(
                f"no {kind} model reachable: {variable}={configured[component.name]} does not "
                f"answer ({component.detail}); until then {consequence}"
            )


def _synced(report: ModelSync) -> str:
    changed = len(report.added) + len(report.changed) + len(report.removed)
    total = len(report.added) + len(report.changed) + len(report.unchanged)
    return f"{total} deployment(s), {changed} change(s)"


async def _seed(out: Output, rt: Runtime, health: list[ComponentHealth]) -> SeedReport:
    embed_ok = any(c.name == "embed_model" and c.ok for c in health)
    with out.progress(f"seeding the demo tenant {DEMO_TENANT!r}") as step:
        report = await seed_demo(
            rt.services,
            rt.settings.database.data_dir,
            actor=rt.caller.actor,
            load_documents=embed_ok,
            tools=demo_tools(rt.services.source.origin),
        )
        done = [
            "agent created" if report.agent_created else "",
            "new API key" if report.key_created else "",
            f"{len(report.documents_added)} document(s) added" if report.documents_added else "",
            f"{report.documents_present} already present" if report.documents_present else "",
        ]
        step.detail = ", ".join(d for d in done if d) or "nothing to do"
    if report.documents_skipped is not None:
        out.say(
            f"demo documents not loaded: {report.documents_skipped}; "
            "the next `garrison up` that finds an embedding model will load them"
        )
    return report


def _ready(
    out: Output,
    rt: Runtime,
    url: str,
    started: float,
    seed: SeedReport | None,
    health: list[ComponentHealth],
    no_worker: bool,
) -> None:
    elapsed = time.perf_counter() - started
    curl = None
    if seed is not None:
        body = json.dumps({"agent": DEMO_AGENT, "input": DEMO_QUESTION}, separators=(",", ":"))
        curl = (
            f'curl -s -X POST {url}/v1/runs -H "Authorization: Bearer {seed.secret}" '
            f"-H \"Content-Type: application/json\" -d '{body}'"
        )
    payload = {
        "status": "ready",
        "ready_s": round(elapsed, 3),
        "api_url": url,
        "pid": os.getpid(),
        "worker": not no_worker,
        "config": describe(rt.settings),
        "components": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in health],
        "demo": None
        if seed is None
        else {"tenant": DEMO_TENANT, "agent": DEMO_AGENT, "key_file": seed.key_file, "curl": curl},
    }

    def human() -> None:
        out.line(f"ready in {elapsed:.1f} s: API at {url}")
        if no_worker:
            out.line("no worker in this process: runs wait for a `garrison worker` elsewhere")
        if curl is not None and seed is not None:
            out.line(f"demo tenant {DEMO_TENANT!r}, agent {DEMO_AGENT!r}; key in {seed.key_file}")
            out.line("send a first run:")
            out.line(f"  {curl}")
            out.line("then see what it did, step by step:")
            out.line(f"  {cli_name()} runs show <id from the response>")
        out.line("press Ctrl-C to stop")

    out.emit(payload, human)


def cli_name() -> str:
    """How to call this CLI again: `garrison` when it is on PATH, else the full path to it."""
    me = Path(sys.argv[0]).resolve()
    found = shutil.which("garrison")
    if found is not None and Path(found).resolve() == me:
        return "garrison"
    return str(me) if me.name == "garrison" else "garrison"
