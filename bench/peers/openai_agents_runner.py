"""The OpenAI Agents SDK's side of the durable-overhead benchmark: an `Agent` with one function
tool on `OpenAIChatCompletionsModel` (a custom AsyncOpenAI client on the loopback server),
run by `Runner.run` with the SDK's `SQLAlchemySession` on Postgres (asyncpg), tracing disabled.

The SDK's session is its persistence: the runner saves each turn's new items (the tool call and
its output) to the session as the turn completes, in one transaction. It is conversation memory
rather than resumable run state, which is what the SDK offers. Peers' virtualenv only.

    bench/.peers-venv/bin/python -m bench.peers.openai_agents_runner --db-url ... --model-url ...
"""

from __future__ import annotations

import importlib.metadata
import uuid

import httpx2
from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
from agents.extensions.memory import SQLAlchemySession
from openai import AsyncOpenAI
from sqlalchemy.ext.asyncio import create_async_engine

from bench.peers import harness

set_tracing_disabled(True)


@function_tool
async def noop(note: str) -> str:
    """Does nothing."""
    harness.record_tool_call()
    return '{"ok": true}'


def asyncpg_url(libpq_url: str) -> str:
    """The same database for SQLAlchemy's asyncpg dialect (the driver the SDK's docs use)."""
    scheme, sep, rest = libpq_url.partition("://")
    if not sep or scheme not in {"postgresql", "postgres"}:
        raise ValueError(f"not a libpq URL: {libpq_url!r}")
    return f"postgresql+asyncpg://{rest}"


class OpenAIAgents(harness.Framework):
    name = "OpenAI Agents SDK"
    version = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("openai-agents", "sqlalchemy", "asyncpg")
    )
    persists = (
        "SQLAlchemySession: per turn, one transaction locking the session row, INSERTing the "
        "turn's items (tool call, tool output) and touching the session's updated_at; per run, "
        "the history read and the user input first, the final answer last"
    )

    def __init__(self, ctx: harness.Context) -> None:
        self._http = harness.timed_client(httpx2)
        client = AsyncOpenAI(
            base_url=ctx.model_url, api_key="bench-no-key", http_client=self._http, max_retries=0
        )
        self._engine = create_async_engine(
            asyncpg_url(ctx.db_url),
            pool_size=harness.POOL_SIZE,
            max_overflow=harness.POOL_MAX - harness.POOL_SIZE,
        )
        self._agent = Agent(
            name="bench",
            instructions="Benchmark agent.",
            tools=[noop],
            model=OpenAIChatCompletionsModel(model=harness.MODEL_NAME, openai_client=client),
        )

    async def open(self) -> None:
        # Tables once, up front, as the SDK's docs advise for production (create_tables=False).
        setup = SQLAlchemySession("bench-setup", engine=self._engine, create_tables=True)
        await setup.get_items()

    async def run(self, turns: int) -> None:
        session = SQLAlchemySession(uuid.uuid4().hex, engine=self._engine)
        result = await Runner.run(
            self._agent, f"turns={turns} go", session=session, max_turns=turns + 1
        )
        if result.final_output != "done":
            raise RuntimeError(f"run ended without the final answer: {result.final_output!r}")

    async def aclose(self) -> None:
        await self._engine.dispose()
        await self._http.aclose()


async def open_openai_agents(ctx: harness.Context) -> harness.Framework:
    framework = OpenAIAgents(ctx)
    await framework.open()
    return framework


if __name__ == "__main__":
    harness.main(open_openai_agents)
