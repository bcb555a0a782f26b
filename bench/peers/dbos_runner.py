"""DBOS's side of the durable-overhead benchmark: the agent loop as a DBOS workflow whose model
call and tool call are DBOS steps (the pattern DBOS documents for agents), with the system
database on the benchmark's Postgres.

DBOS checkpoints each step's output in its system database before the workflow goes on, so a
crashed run resumes after its last completed step. Peers' virtualenv only.

    bench/.peers-venv/bin/python -m bench.peers.dbos_runner --db-url ... --model-url ...
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
from typing import Any

import httpx2
from dbos import DBOS, DBOSConfig
from openai import AsyncOpenAI

from bench.peers import harness

NOOP_TOOL = {
    "type": "function",
    "function": {
        "name": "noop",
        "description": "Does nothing.",
        "parameters": {
            "type": "object",
            "properties": {"note": {"type": "string"}},
            "required": ["note"],
        },
    },
}
_client: AsyncOpenAI | None = None


@DBOS.step()
async def call_model(messages: list[dict[str, Any]]) -> dict[str, Any]:
    assert _client is not None
    response = await _client.chat.completions.create(
        model=harness.MODEL_NAME,
        messages=messages,  # type: ignore[arg-type]
        tools=[NOOP_TOOL],  # type: ignore[list-item]
    )
    return response.choices[0].message.model_dump(exclude_none=True)


@DBOS.step()
async def noop(note: str) -> str:
    harness.record_tool_call()
    return '{"ok": true}'


@DBOS.workflow()
async def agent_loop(turns: int) -> str:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Benchmark agent."},
        {"role": "user", "content": f"turns={turns} go"},
    ]
    while True:
        message = await call_model(messages)
        messages.append(message)
        calls = message.get("tool_calls")
        if not calls:
            return str(message.get("content"))
        for call in calls:
            result = await noop(**json.loads(call["function"]["arguments"]))
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})


class Dbos(harness.Framework):
    name = "DBOS"
    version = (
        f"dbos {importlib.metadata.version('dbos')}, openai {importlib.metadata.version('openai')}"
    )
    persists = (
        "per turn two steps (model call, tool call), each step's output row committed to the "
        "system database (operation_outputs) before the workflow continues; per run, the "
        "workflow_status row at start (with its inputs) and its final status and output"
    )

    def __init__(self, ctx: harness.Context) -> None:
        global _client
        self._http = harness.timed_client(httpx2)
        _client = AsyncOpenAI(
            base_url=ctx.model_url, api_key="bench-no-key", http_client=self._http, max_retries=0
        )
        config: DBOSConfig = {
            "name": "bench-dbos",
            "system_database_url": ctx.db_url,
            "db_engine_kwargs": {
                "pool_size": harness.POOL_SIZE,
                "max_overflow": harness.POOL_MAX - harness.POOL_SIZE,
            },
            "log_level": "WARNING",
            "enable_otlp": False,
        }
        DBOS(config=config)

    async def open(self) -> None:
        # launch() creates the system tables and starts DBOS's threads; it blocks, so off-loop.
        await asyncio.to_thread(DBOS.launch)

    async def run(self, turns: int) -> None:
        answer = await agent_loop(turns)
        if answer != "done":
            raise RuntimeError(f"workflow ended without the final answer: {answer!r}")

    async def aclose(self) -> None:
        await asyncio.to_thread(DBOS.destroy)
        await self._http.aclose()


async def open_dbos(ctx: harness.Context) -> harness.Framework:
    framework = Dbos(ctx)
    await framework.open()
    return framework


if __name__ == "__main__":
    harness.main(open_dbos)
