"""LangGraph's side of the durable-overhead benchmark: the canonical hand-built tool loop
(an ``agent`` node calling ChatOpenAI with the tool bound, a prebuilt ``ToolNode``,
``tools_condition`` to end), compiled with the Postgres checkpointer.

``durability="sync"`` makes every super-step's checkpoint durable before the next step starts,
which is the guarantee Garrison gives per turn (LangGraph's default, ``"async"``, writes the
checkpoint while the next step already runs). Peers' virtualenv only.

    bench/.peers-venv/bin/python -m bench.peers.langgraph_runner --db-url ... --model-url ...
"""

from __future__ import annotations

import importlib.metadata
import uuid
from typing import Any

import httpx2
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from bench.peers import harness


@tool
async def noop(note: str) -> str:
    """Does nothing."""
    harness.record_tool_call()
    return '{"ok": true}'


class LangGraph(harness.Framework):
    name = "LangGraph + PostgresSaver"
    version = (
        f"langgraph {importlib.metadata.version('langgraph')}, langgraph-checkpoint-postgres "
        f"{importlib.metadata.version('langgraph-checkpoint-postgres')}, langchain-openai "
        f"{importlib.metadata.version('langchain-openai')}"
    )
    persists = (
        "durability='sync': after each super-step (2 per turn: the model node, then the tool "
        "node) a checkpoint row, the blobs of the channels that changed (the messages list) and "
        "the step's pending writes, committed before the next step starts"
    )

    def __init__(self, ctx: harness.Context) -> None:
        self._ctx = ctx
        # The checkpointer's documented requirements for connections it is handed.
        self._pool = AsyncConnectionPool(
            conninfo=ctx.db_url,
            min_size=harness.POOL_SIZE,
            max_size=harness.POOL_MAX,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            open=False,
        )
        self._http = harness.timed_client(httpx2)

    async def open(self) -> None:
        await self._pool.open(wait=True)
        saver = AsyncPostgresSaver(self._pool)  # type: ignore[arg-type]
        await saver.setup()
        llm = ChatOpenAI(
            model=harness.MODEL_NAME,
            base_url=self._ctx.model_url,
            api_key="bench-no-key",
            http_async_client=self._http,
            max_retries=0,
        )
        model = llm.bind_tools([noop])

        async def agent(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await model.ainvoke(state["messages"])]}

        builder = StateGraph(MessagesState)
        builder.add_node("agent", agent)
        builder.add_node("tools", ToolNode([noop]))
        builder.add_edge(START, "agent")
        builder.add_conditional_edges("agent", tools_condition)
        builder.add_edge("tools", "agent")
        self._graph = builder.compile(checkpointer=saver)

    async def run(self, turns: int) -> None:
        config: Any = {
            "configurable": {"thread_id": uuid.uuid4().hex},
            "recursion_limit": 2 * turns + 10,
        }
        state = await self._graph.ainvoke(
            {
                "messages": [
                    SystemMessage("Benchmark agent."),
                    HumanMessage(f"turns={turns} go"),
                ]
            },
            config,
            durability="sync",
        )
        final = state["messages"][-1]
        if final.content != "done":
            raise RuntimeError(f"run ended without the final answer: {final!r}")

    async def aclose(self) -> None:
        await self._pool.close()
        await self._http.aclose()


async def open_langgraph(ctx: harness.Context) -> harness.Framework:
    framework = LangGraph(ctx)
    await framework.open()
    return framework


if __name__ == "__main__":
    harness.main(open_langgraph)
