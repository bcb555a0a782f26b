"""Per-step overhead of the run loop with durable commits, against its floors.

A scripted model in a separate process answers instantly, so what is measured is Garrison's own
cost per turn: context building, the HTTP exchange, validation, a trivial tool, and the step's
commit to Postgres (fsync on). Floors measured in the same run on the same machine:
one INSERT+COMMIT, and one raw httpx POST of a decision-sized body to the same model server.

    .venv/bin/python -m bench.loop_overhead [--runs 30] [--concurrent 200]

Uses GARRISON_DATABASE_URL when set, else a throwaway embedded Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from pydantic import Field

from agent.domain import Principal, Role
from agent.loop import RunLoop
from agent.outbox.settings import OutboxSettings
from agent.runtime import Services, Settings, open_services
from agent.settings import AgentSettings
from agent.tools import build_tools
from agent.tools.base import Tool, ToolArguments, ToolContext, ToolResult
from agent.worker import Worker
from datastore.embedded import EmbeddedPostgres
from datastore.settings import DatabaseSettings
from serving.settings import ServingSettings
from serving.testing.scripted import ScriptedModelServer


class NoopArgs(ToolArguments):
    note: str = Field(max_length=50)


class Noop(Tool[NoopArgs]):
    """A tool that does nothing, so the figure is the loop's cost and not a tool's."""

    name = "noop"
    description = "Does nothing."
    arguments = NoopArgs

    async def run(self, args: NoopArgs, ctx: ToolContext) -> ToolResult:
        return ToolResult(data={"ok": True})


def respond(request: dict[str, Any]) -> str:
    """Call `noop` until the task's turn count is reached, then `finish`."""
    messages = request["messages"]
    wanted = int(messages[1]["content"].split("turns=")[1].split()[0])
    done = (len(messages) - 2) // 2
    if done + 1 < wanted:
        return json.dumps({"tool": "noop", "arguments": {"note": f"turn {done + 1}"}})
    return json.dumps({"tool": "finish", "arguments": {"answer": "done"}})


def serve_model(port_out: Any) -> None:
    server = ScriptedModelServer().start()
    server.set_responder(respond)
    port_out.put(server.base_url)
    while True:
        time.sleep(3600)


async def floors(url: str, model_url: str, n: int = 300) -> dict[str, float]:
    commit: list[float] = []
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute("CREATE TEMP TABLE floor (id bigserial, body jsonb)")
        await conn.commit()
        for _ in range(n):
            t = time.perf_counter()
            await conn.execute("INSERT INTO floor (body) VALUES (%s)", ['{"x": 1}'])
            await conn.commit()
            commit.append((time.perf_counter() - t) * 1000)
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "turns=2 x"}] * 2}
    ).encode()
    http: list[float] = []
    async with httpx.AsyncClient() as client:
        for _ in range(n):
            t = time.perf_counter()
            r = await client.post(
                f"{model_url}/chat/completions",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            r.raise_for_status()
            http.append((time.perf_counter() - t) * 1000)
    return {"commit": statistics.median(commit), "http": statistics.median(http)}


async def setup(services: Services) -> Principal:
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
    return await services.keys.authenticate(secret)


async def per_step(
    services: Services, loop: RunLoop, who: Principal, turns: int, runs: int
) -> dict[str, float]:
    per_turn: list[float] = []
    model: list[float] = []
    worker = Worker(services.store.runs, loop, services.settings.agent, "bench-seq")
    for _ in range(runs):
        run = await services.runs.submit(who, "bench", f"turns={turns} go")
        t = time.perf_counter()
        await worker.run_until_idle()
        per_turn.append((time.perf_counter() - t) * 1000 / turns)
        steps = await services.runs.steps(run.id, who.tenant_id)
        assert len(steps) == turns, f"expected {turns} steps, got {len(steps)}"
        model.append(statistics.mean(s.model_ms for s in steps))
    return {"p50": statistics.median(per_turn), "model": statistics.median(model)}


async def throughput(
    services: Services, loop: RunLoop, who: Principal, runs: int, turns: int
) -> float:
    for _ in range(runs):
        await services.runs.submit(who, "bench", f"turns={turns} go")
    settings = services.settings.agent.model_copy(update={"worker_concurrency": runs})
    worker = Worker(services.store.runs, loop, settings, "bench-par")
    t = time.perf_counter()
    task = asyncio.create_task(worker.run_forever())
    while worker.completed < runs:  # noqa: ASYNC110 - polling a counter is the measurement
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t
    worker.stop()
    await task
    return runs * turns / elapsed


async def main_async(args: argparse.Namespace, db_url: str, model_url: str) -> None:
    settings = Settings(
        database=DatabaseSettings(database_url=db_url, db_pool_size=20),
        serving=ServingSettings(chat_url=model_url, embed_url=model_url),
        agent=AgentSettings(poll_interval_s=0.01),
    )
    services = await open_services(settings, db_url, upgrade=True)
    try:
        who = await setup(services)
        loop = RunLoop(
            runs=services.store.runs,
            agents=services.store.agents,
            documents=services.store.documents,
            models=services.models,
            tools={**build_tools(OutboxSettings()), "noop": Noop()},
            settings=settings.agent,
        )
        f = await floors(db_url, model_url)
        await per_step(services, loop, who, 5, 3)  # warm-up
        five = await per_step(services, loop, who, 5, args.runs)
        fifty = await per_step(services, loop, who, 50, max(3, args.runs // 5))
        rate = await throughput(services, loop, who, args.concurrent, 5)
    finally:
        await services.aclose()
    loop5 = five["p50"] - five["model"]
    loop50 = fifty["p50"] - fifty["model"]
    print(f"\nfloors: INSERT+COMMIT p50 {f['commit']:.3f} ms | ", end="")
    print(f"raw httpx POST to the model p50 {f['http']:.3f} ms\n")
    print(f"{'measure':<48}{'value':>12}{'ratio':>22}")
    rows = [
        (
            "per turn, 5-turn runs, p50 (ms)",
            five["p50"],
            f"{five['p50'] / (f['commit'] + f['http']):.2f}x commit+http",
        ),
        ("  of which model HTTP exchange (ms)", five["model"], ""),
        ("  loop + tool + durable commit (ms)", loop5, f"{loop5 / f['commit']:.2f}x one commit"),
        (
            "per turn, 50-turn runs, p50 (ms)",
            fifty["p50"],
            f"{fifty['p50'] / five['p50']:.2f}x the 5-turn cost",
        ),
        ("  loop + tool + durable commit (ms)", loop50, f"{loop50 / f['commit']:.2f}x one commit"),
        (f"steps/s, {args.concurrent} concurrent 5-turn runs", rate, "1 worker process"),
    ]
    for name, value, ratio in rows:
        print(f"{name:<48}{value:>12.3f}{ratio:>22}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=200)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    model = ctx.Process(target=serve_model, args=(queue,), daemon=True)
    model.start()
    model_url = queue.get(timeout=30)
    embedded = None
    db_url = os.environ.get("GARRISON_DATABASE_URL")
    if not db_url:
        tmp = Path(tempfile.mkdtemp(prefix="garrison-bench-"))
        embedded = EmbeddedPostgres(tmp)
        db_url = embedded.start()
    try:
        asyncio.run(main_async(args, db_url, model_url))
    finally:
        model.terminate()
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
