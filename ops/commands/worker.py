"""`garrison worker`: claim and drive runs, for deployments with workers apart from the API."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from agent.runtime import Settings
from ops.output import JsonFlag, Output
from ops.runtime import execute, gate_for, open_runtime


def worker(
    ctx: typer.Context,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-c",
            min=1,
            max=1000,
            help="Runs driven at once [default: GARRISON_WORKER_CONCURRENCY, 4]",
        ),
    ] = None,
    json_logs: Annotated[
        bool, typer.Option("--json-logs", help="Write logs to stderr as JSON lines.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Run a worker until Ctrl-C; on stop it finishes the steps in flight."""
    out = Output(json_out)
    started = time.perf_counter()

    async def main(settings: Settings) -> None:
        # Imported on use, as in `up`: the API stack is slow to import and rarely needed.
        from ops.appliance import StopSignals, configure_logging, run_until_stopped

        if concurrency is not None:
            agent = settings.agent.model_copy(update={"worker_concurrency": concurrency})
            settings = settings.model_copy(update={"agent": agent})
        with StopSignals(out).installed() as stop:
            configure_logging(json_logs)
            gate = gate_for(ctx)
            async with open_runtime(
                settings, schema="auto", gate=gate, progress=out.progress
            ) as rt:
                chat = next(c for c in await rt.services.health() if c.name == "chat_model")
                if not chat.ok:
                    out.say(f"warning: no chat model reachable ({chat.detail}); runs will fail")
                if stop.requested.is_set():
                    out.say("stopped before the worker started")
                    return
                runner = rt.services.worker()
                slots = rt.settings.agent.worker_concurrency

                def ready() -> None:
                    elapsed = time.perf_counter() - started
                    out.emit(
                        {
                            "status": "ready",
                            "worker_id": runner.worker_id,
                            "concurrency": slots,
                            "ready_s": round(elapsed, 3),
                        },
                        lambda: out.line(
                            f"worker {runner.worker_id} ready in {elapsed:.1f} s "
                            f"({slots} run(s) at a time)"
                        ),
                    )

                await run_until_stopped(
                    rt.services, rt.settings, rt.url, stop, out,
                    api_socket=None, worker=runner, on_ready=ready,
                    dispatcher=rt.services.dispatcher(),
                )  # fmt: skip
        out.say("stopped")

    execute(ctx, out, main)
