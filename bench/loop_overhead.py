"""Garrison's side of the durable per-turn overhead benchmark: the real run loop and worker,
a ``noop`` tool, every step committed to Postgres (fsync on).

Runs in Garrison's own virtualenv, one process, measured by the shared harness
(`bench.peers.harness`) exactly as the peer frameworks are. On its own it is the Garrison-only
slice of `bench.durable_overhead` (floors included):

    .venv/bin/python -m bench.loop_overhead [--runs 30] [--concurrency 1000] ...

which is ``python -m bench.durable_overhead --frameworks garrison ...``. The orchestrator starts
it as ``python -m bench.loop_overhead --runner --db-url ... --model-url ... --result-file ...``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import subprocess
import sys
import time
import uuid
from pathlib import Path

from pydantic import Field

from agent.domain import Principal, Role, RunStatus
from agent.loop import RunLoop
from agent.outbox.settings import OutboxSettings
from agent.runtime import Settings, open_services
from agent.settings import AgentSettings
from agent.tools import build_tools
from agent.tools.base import Tool, ToolArguments, ToolContext, ToolResult
from agent.worker import Worker
from bench.peers import harness
from datastore.settings import DatabaseSettings
from serving.settings import ServingSettings

REPO = Path(__file__).resolve().parent.parent
STALL_S = 60.0
CODE_DIRS = ("agent", "datastore", "serving")


class NoopArgs(ToolArguments):
    note: str = Field(max_length=50)


class Noop(Tool[NoopArgs]):
    """A tool that does nothing, so the figure is the loop's cost and not a tool's."""

    name = "noop"
    description = "Does nothing."
    arguments = NoopArgs

    async def run(self, args: NoopArgs, ctx: ToolContext) -> ToolResult:
        harness.record_tool_call()
        # Echoing the note makes every result new information, as a real tool's would be, so
        # loop detection (which stops runs that learn nothing) lets the 50-turn runs go on.
        return ToolResult(data={"ok": True, "note": args.note})


def _version() -> str:
    version = importlib.metadata.version("garrison")
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", *CODE_DIRS],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return version
    return f"{version} @ {sha}{' + uncommitted changes' if dirty else ''}"


class Garrison(harness.Framework):
    name = "Garrison"
    persists = (
        "per turn, one transaction: the guarded UPDATE of the run (step count, tokens, status; "
        "its trigger appends a run_events row and NOTIFYs) and the INSERT of the step row "
        "(context summary, model attempts, action, result, timings); per run, the run row at "
        "submit and the claim (lease) UPDATE"
    )

    def __init__(self, ctx: harness.Context) -> None:
        self.version = _version()
        self._settings = Settings(
            database=DatabaseSettings(database_url=ctx.db_url, db_pool_size=harness.POOL_SIZE),
            serving=ServingSettings(chat_url=ctx.model_url, embed_url=ctx.model_url),
            agent=AgentSettings(poll_interval_s=0.01),
        )
        self._ctx = ctx
        self._pending: list[tuple[uuid.UUID, int]] = []

    async def open(self) -> None:
        self._services = await open_services(self._settings, self._ctx.db_url, upgrade=True)
        services = self._services
        tenant = await services.tenancy.create_tenant("bench", actor="bench")
        await services.store.agents.put_agent(
            tenant.id,
            "bench",
            instructions="Benchmark agent.",
            allowed_tools=["noop", "finish"],
            model_role="decide",
            max_steps=1000,
            retrieval_k=0,
        )
        _key, secret = await services.keys.create("bench", "bench", [Role.CLIENT], actor="bench")
        self._who: Principal = await services.keys.authenticate(secret)
        self._loop = RunLoop(
            runs=services.store.runs,
            agents=services.store.agents,
            documents=services.store.documents,
            models=services.models,
            tools={**build_tools(OutboxSettings()), "noop": Noop()},
            settings=self._settings.agent,
        )
        self._worker = Worker(services.store.runs, self._loop, self._settings.agent, "bench-seq")

    async def run(self, turns: int) -> None:
        # Submitting is part of a run's cost, as starting a workflow or a graph is for the peers.
        # run_until_idle ends with one empty claim (a read-only transaction), counted here too.
        run = await self._services.runs.submit(self._who, "bench", f"turns={turns} go")
        await self._worker.run_until_idle()
        self._pending.append((run.id, turns))

    async def run_many(self, runs: int, turns: int) -> None:
        for _ in range(runs):
            run = await self._services.runs.submit(self._who, "bench", f"turns={turns} go")
            self._pending.append((run.id, turns))
        settings = self._settings.agent.model_copy(update={"worker_concurrency": runs})
        worker = Worker(self._services.store.runs, self._loop, settings, "bench-par")
        task = asyncio.create_task(worker.run_forever())
        done, progress_at = 0, time.monotonic()
        try:
            while worker.completed < runs:  # polling a counter is the measurement
                await asyncio.sleep(0.005)
                if worker.completed != done:
                    done, progress_at = worker.completed, time.monotonic()
                elif time.monotonic() - progress_at > STALL_S:
                    # A run that raised mid-drive is never counted: fail instead of waiting.
                    raise RuntimeError(f"no run finished for {STALL_S:.0f} s ({done}/{runs} done)")
        finally:
            worker.stop()
            await task

    async def after_phase(self) -> None:
        """Check every run of the phase succeeded with all its steps; collect their model times."""
        for run_id, turns in self._pending:
            run = await self._services.runs.get(run_id, self._who.tenant_id)
            steps = await self._services.runs.steps(run_id, self._who.tenant_id)
            if run.status != RunStatus.SUCCEEDED or len(steps) != turns:
                raise RuntimeError(
                    f"run {run_id}: {run.status} with {len(steps)} steps, expected "
                    f"succeeded with {turns} ({run.failure_code}: {run.failure_detail})"
                )
            harness.MODEL_MS.extend(s.model_ms for s in steps)
        self._pending.clear()

    async def aclose(self) -> None:
        await self._services.aclose()


async def open_garrison(ctx: harness.Context) -> harness.Framework:
    garrison = Garrison(ctx)
    await garrison.open()
    return garrison


def main() -> None:
    if "--runner" in sys.argv:
        sys.argv.remove("--runner")
        harness.main(open_garrison)
        return
    from bench import durable_overhead

    durable_overhead.main(["--frameworks", "garrison", *sys.argv[1:]])


if __name__ == "__main__":
    main()
