"""pydantic-ai's side of the durable-overhead benchmark: an `Agent` on an OpenAI-compatible
chat model with one plain tool, driven node by node with ``Agent.iter``.

pydantic-ai keeps a run's state in memory; its own durable path goes through an external engine
(Temporal, DBOS, Prefect). The simplest honest equivalent of a per-turn durable commit is done
here: at every turn boundary the messages the run added since the last commit — the model's
tool call and the tool's result, serialized with ``ModelMessagesTypeAdapter`` (the format its
docs give for storing history) — are INSERTed and committed to Postgres before the next model
request. Peers' virtualenv only.

    bench/.peers-venv/bin/python -m bench.peers.pydantic_ai_runner --db-url ... --model-url ...
"""

from __future__ import annotations

import importlib.metadata
import uuid

import httpx2
from openai import AsyncOpenAI
from psycopg_pool import AsyncConnectionPool
from pydantic_ai import Agent, Tool
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.usage import UsageLimits

from bench.peers import harness

SCHEMA = """
CREATE TABLE IF NOT EXISTS agent_messages (
    run_id uuid NOT NULL,
    seq integer NOT NULL,
    messages jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
)
"""


async def noop(note: str) -> str:
    """Does nothing."""
    harness.record_tool_call()
    return '{"ok": true}'


class PydanticAI(harness.Framework):
    name = "pydantic-ai"
    version = f"pydantic-ai-slim {importlib.metadata.version('pydantic-ai-slim')}"
    persists = (
        "per turn, one transaction: one INSERT of the messages added since the last commit "
        "(the model's tool-call response and the tool's return, as ModelMessagesTypeAdapter "
        "JSON), committed before the next model request; per run, the user prompt first and "
        "the final answer last (run state itself is in memory: pydantic-ai has no built-in "
        "Postgres persistence)"
    )

    def __init__(self, ctx: harness.Context) -> None:
        self._http = harness.timed_client(httpx2)
        client = AsyncOpenAI(
            base_url=ctx.model_url, api_key="bench-no-key", http_client=self._http, max_retries=0
        )
        model = OpenAIChatModel(harness.MODEL_NAME, provider=OpenAIProvider(openai_client=client))
        self._agent = Agent(
            model, system_prompt="Benchmark agent.", tools=[Tool(noop, takes_ctx=False)]
        )
        self._pool = AsyncConnectionPool(
            conninfo=ctx.db_url, min_size=harness.POOL_SIZE, max_size=harness.POOL_MAX, open=False
        )

    async def open(self) -> None:
        await self._pool.open(wait=True)
        async with self._pool.connection() as conn:
            await conn.execute(SCHEMA)

    async def _commit(self, run_id: uuid.UUID, seq: int, messages: list[ModelMessage]) -> None:
        body = ModelMessagesTypeAdapter.dump_json(messages).decode()
        async with self._pool.connection() as conn:  # commits on leaving the block
            await conn.execute(
                "INSERT INTO agent_messages (run_id, seq, messages) VALUES (%s, %s, %s)",
                (run_id, seq, body),
            )

    async def run(self, turns: int) -> None:
        run_id = uuid.uuid4()
        saved = 0
        seq = 0
        limits = UsageLimits(request_limit=turns + 1)
        async with self._agent.iter(f"turns={turns} go", usage_limits=limits) as agent_run:
            async for node in agent_run:
                history = agent_run.all_messages()
                if saved > len(history):
                    raise RuntimeError("pydantic-ai rewrote its history; the count is off")
                pending = history[saved:]
                if Agent.is_model_request_node(node):
                    # The request about to be sent carries the tool results of the last turn:
                    # they are made durable before the model sees them, as in the other loops.
                    pending = [*pending, node.request]
                elif not Agent.is_end_node(node):
                    continue
                if pending:
                    await self._commit(run_id, seq, pending)
                    seq += 1
                    saved += len(pending)
            result = agent_run.result
            final = agent_run.all_messages()
        if result is None or result.output != "done":
            raise RuntimeError(f"run ended without the final answer: {result!r}")
        if saved != len(final):
            raise RuntimeError(f"committed {saved} messages of {len(final)}")

    async def aclose(self) -> None:
        await self._pool.close()
        await self._http.aclose()


async def open_pydantic_ai(ctx: harness.Context) -> harness.Framework:
    framework = PydanticAI(ctx)
    await framework.open()
    return framework


if __name__ == "__main__":
    harness.main(open_pydantic_ai)
