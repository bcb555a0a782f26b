"""`garrison models serve|stop|status|logs|import-gguf`: the engines Garrison runs itself.

Registered on `ops.commands.models.app` (one `models` noun for the registry and its engines);
importing this module is what adds them. The commands act on the active registry's local
deployments; external ones are shown and health-checked, never started. No database needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from agent.runtime import Settings
from ops.commands.engine import engine_settings
from ops.commands.models import app
from ops.errors import CALLER, CliError
from ops.output import JsonFlag, Output
from ops.runtime import execute
from serving.engine.bundled import gemma_dir
from serving.engine.environment import locate
from serving.engine.gguf import import_gguf
from serving.engine.manager import EngineManager
from serving.engine.process import tail
from serving.registry import Deployment
from serving.registry_source import active_registry

NamesArg = Annotated[
    list[str] | None, typer.Argument(help="Deployment names [default: every local one].")
]

__all__ = ["app"]


def _manager(settings: Settings) -> EngineManager:
    """The engines of the active registry (models file, endpoint URLs or the bundled models)."""
    engine = engine_settings(settings)
    env = locate(engine)
    installed = env.installed() is not None if env.managed else env.python.is_file()
    registry = active_registry(settings.serving).registry
    return EngineManager(registry, engine, python=env.python if installed else None)


def _select(manager: EngineManager, names: Sequence[str]) -> tuple[Deployment, ...]:
    try:
        return manager.select(names)
    except KeyError as exc:
        known = ", ".join(d.name for d in manager.registry.deployments)
        raise CliError(
            "not_found", f"no deployment named {exc.args[0]!r} (known: {known})"
        ) from None


@app.command("import-gguf")
def import_gguf_command(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Convert the bundled Gemma 3 270M GGUF into a model folder vLLM can serve (once)."""
    out = Output(json_out)

    async def main(settings: Settings) -> None:
        engine = engine_settings(settings)
        report = import_gguf(locate(engine), gemma_dir(engine), out.say)
        payload = {
            "path": report.path,
            "cached": report.cached,
            "seconds": round(report.seconds, 1),
        }
        state = (
            "already imported (checked)" if report.cached else f"imported in {report.seconds:.0f} s"
        )
        out.emit(payload, lambda: out.line(f"gemma3-270m {state}: {report.path}"))

    execute(ctx, out, main)


@app.command("serve")
def serve(
    ctx: typer.Context,
    names: NamesArg = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=1, help="Seconds to wait for readiness.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Start the local engines (detached) and wait until each answers."""
    out = Output(json_out)

    async def main(settings: Settings) -> None:
        manager = _manager(settings)
        chosen = [d for d in _select(manager, names or []) if d.placement.kind == "local"]
        for deployment in chosen:
            record, started = manager.start(deployment)
            verb = "starting" if started else "already running:"
            out.say(f"{verb} {deployment.name} on port {record.port} (pid {record.pid})")
        waits = [manager.wait_ready(d, timeout_s=timeout, progress=out.say) for d in chosen]
        # Every engine gets its chance (they load in parallel); the first failure is reported
        # after the others are ready or have failed too.
        results = await asyncio.gather(*waits, return_exceptions=True)
        rows = []
        for deployment, result in zip(chosen, results, strict=True):
            if isinstance(result, BaseException):
                continue
            url = manager.url(deployment)
            rows.append({"name": deployment.name, "url": url, "ready_after_s": round(result, 1)})
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for row in rows:
                out.say(f"{row['name']} ready at {row['url']}")
            raise failures[0]
        if not chosen:
            out.say("nothing to start: the active registry has no local deployments")

        def human() -> None:
            for row in rows:
                out.line(f"{row['name']} ready at {row['url']} ({row['ready_after_s']:.0f} s)")

        out.emit({"engines": rows}, human)

    execute(ctx, out, main)


@app.command("stop")
def stop(ctx: typer.Context, names: NamesArg = None, json_out: JsonFlag = False) -> None:
    """Stop local engines: SIGTERM, then SIGKILL after GARRISON_ENGINE_STOP_GRACE_S."""
    out = Output(json_out)

    async def main(settings: Settings) -> None:
        manager = _manager(settings)
        chosen = [d for d in _select(manager, names or []) if d.placement.kind == "local"]
        stopped: dict[str, str] = {}
        for deployment in chosen:
            before = manager.status(deployment).state
            was_running = await asyncio.to_thread(manager.stop, deployment)
            # A crashed engine's helpers are cleared up too; say so rather than "not running".
            stopped[deployment.name] = (
                "stopped" if was_running else "crashed" if before == "dead" else "not_running"
            )
        said = {"stopped": "stopped", "crashed": "had crashed; cleared what it left behind"}

        def human() -> None:
            for name, outcome in stopped.items():
                out.line(f"{name}: {said.get(outcome, 'was not running')}")

        out.emit({"stopped": stopped}, human)

    execute(ctx, out, main)


@app.command("status")
def status(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Every deployment's engine: process state, address, and whether it answers."""
    out = Output(json_out)

    async def main(settings: Settings) -> None:
        manager = _manager(settings)
        rows = await asyncio.gather(*(_row(manager, d) for d in manager.registry.deployments))

        def human() -> None:
            headers = ("NAME", "ROLES", "STATE", "URL", "PID", "HEALTH")
            cells = [
                (
                    r["name"],
                    ",".join(r["roles"]),
                    r["state"],
                    r["url"],
                    str(r["pid"] or "-"),
                    r["health"],
                )
                for r in rows
            ]
            out.table(headers, cells, empty="no deployments")

        out.emit({"engines": rows, "installed": manager.python is not None}, human)

    execute(ctx, out, main)


async def _row(manager: EngineManager, deployment: Deployment) -> dict[str, Any]:
    current = manager.status(deployment)
    health = "-"
    if current.state in ("running", "external"):
        found = await manager.health(deployment)
        health = found.detail
    return {
        "name": deployment.name,
        "roles": list(deployment.roles),
        "state": current.state,
        "detail": current.detail,
        "url": manager.url(deployment),
        "pid": current.record.pid if current.record else None,
        "health": health,
    }


@app.command("logs")
def logs(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    lines: Annotated[int, typer.Option("--tail", "-n", min=0, help="How many lines.")] = 50,
    json_out: JsonFlag = False,
) -> None:
    """The last lines of a local engine's log."""
    out = Output(json_out)

    async def main(settings: Settings) -> None:
        manager = _manager(settings)
        (deployment,) = _select(manager, [name])
        if deployment.placement.kind != "local":
            raise CliError("not_local", f"{name} runs elsewhere; its logs are not here", CALLER)
        files = manager.files(deployment)
        found = tail(files.log, lines)

        def human() -> None:
            for line in found:
                out.line(line)

        out.emit({"name": name, "log": files.log, "lines": found}, human)

    execute(ctx, out, main)
