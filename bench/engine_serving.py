"""Serving figures on the real vLLM CPU engine (the bundled Gemma 3 270M), in one run:

- S2: guided (JSON-schema) vs free decoding, time per output token (TPOT, streamed, so prefill
  is excluded), same prompt, interleaved rounds;
- S1: prefix-cache hit rate on turns >= 2 of a 10-turn run laid out by `agent.context`,
  read from the engine's own counters (`vllm:prefix_cache_hits_total` / `..._queries_total`).

    .venv/bin/python -m bench.engine_serving [--rounds 5] [--turns 10]

Needs `garrison engine install` and `garrison models import-gguf`; starts its own engine on a
free port and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from agent.context import Passage, build_messages
from agent.decision import action_schema
from agent.domain import AgentDefinition, Step, StepStatus
from agent.outbox.settings import OutboxSettings
from agent.tools import DEFAULT_TOOLS, build_tools
from serving.engine.bundled import GEMMA, bundled_registry, minilm_dir
from serving.engine.environment import locate
from serving.engine.manager import EngineManager
from serving.engine.settings import EngineSettings

TOOLS = [t for n, t in build_tools(OutboxSettings()).items() if n in DEFAULT_TOOLS]
SCHEMA = action_schema(TOOLS)
AGENT = AgentDefinition(
    id=uuid.uuid4(), tenant_id=uuid.uuid4(), name="bench",
    instructions="You answer questions about the company's policies from its documents. "
    "Search when you need more information; finish when you can answer.",
    allowed_tools=("search_documents", "finish"), model_role="decide", max_steps=20,
    retrieval_k=4, version=1, created_at=datetime.now(UTC),
)  # fmt: skip
PASSAGES = [
    Passage(i, str(uuid.uuid4()), f"Policy {i}", 0.8,
            f"Section {i}: employees may claim travel costs up to {40 + i} euros per day "
            "when the trip was approved in advance by their manager. " * 3)
    for i in range(4)
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def stream_tpot(http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[float, int]:
    """Milliseconds per output token after the first, and the number of tokens."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    first: float | None = None
    last = 0.0
    tokens = 0
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
    if first is None or tokens < 2:
        raise RuntimeError("the engine streamed no tokens")
    return (last - first) * 1000 / (tokens - 1), tokens


async def guided_vs_free(http: httpx.AsyncClient, model: str, rounds: int) -> dict[str, float]:
    messages = build_messages(AGENT, TOOLS, "How much can I claim per day?", PASSAGES, [],
                              result_chars=1500)  # fmt: skip
    guided_body = {
        "model": model, "messages": messages, "max_tokens": 96, "temperature": 0,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "action", "schema": SCHEMA, "strict": True}},
    }  # fmt: skip
    await stream_tpot(http, guided_body)  # compiles the grammar once
    guided: list[float] = []
    free: list[float] = []
    lengths: list[int] = []
    for _ in range(rounds):
        ms, n = await stream_tpot(http, guided_body)
        guided.append(ms)
        lengths.append(n)
        # Free decoding of the same number of tokens from the same prompt.
        free_body = {"model": model, "messages": messages, "max_tokens": n, "min_tokens": n,
                     "ignore_eos": True, "temperature": 0}  # fmt: skip
        ms, _ = await stream_tpot(http, free_body)
        free.append(ms)
    return {
        "guided": statistics.median(guided),
        "free": statistics.median(free),
        "tokens": statistics.median(lengths),
    }


async def counters(http: httpx.AsyncClient) -> tuple[float, float]:
    text = (await http.get("/metrics")).text

    def total(name: str) -> float:
        return sum(float(m) for m in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    return total("vllm:prefix_cache_hits_total"), total("vllm:prefix_cache_queries_total")


def fake_step(n: int) -> Step:
    now = datetime.now(UTC)
    return Step(
        run_id=uuid.uuid4(), number=n, status=StepStatus.COMPLETED, context={}, decision={},
        tool="search_documents", arguments={"query": f"travel costs question {n}", "k": 4},
        result={"hits": [{"title": f"Policy {n}", "snippet": "Travel costs up to 45 euros. " * 8}]},
        error_code=None, prompt_tokens=0, completion_tokens=0, model_ms=0, tool_ms=0,
        started_at=now, finished_at=now,
    )  # fmt: skip


async def prefix_cache(
    http: httpx.AsyncClient, model: str, turns: int
) -> list[tuple[int, float, float]]:
    """Per turn: the measured hit rate, and the most any cache could hit (the previous turn's
    prompt over this one's: the tokens a turn appends are new by definition)."""
    history: list[Step] = []
    rates: list[tuple[int, float, float]] = []
    previous_prompt = 0
    # One run: the task is fixed for all its turns (a fresh one per benchmark, so turn 1 is cold).
    task = f"Run {uuid.uuid4().hex[:6]}: how much can I claim for travel per day?"
    for turn in range(1, turns + 1):
        messages = build_messages(AGENT, TOOLS, task, PASSAGES, history, result_chars=1500)
        hits0, queries0 = await counters(http)
        body = {"model": model, "messages": messages, "max_tokens": 8, "temperature": 0}
        response = await http.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        prompt = int(response.json()["usage"]["prompt_tokens"])
        hits1, queries1 = await counters(http)
        rates.append(
            (turn, (hits1 - hits0) / max(queries1 - queries0, 1), previous_prompt / prompt)
        )
        previous_prompt = prompt
        history.append(fake_step(turn))
    return rates


async def run(args: argparse.Namespace) -> None:
    shared = EngineSettings()
    env = locate(shared)
    registry = bundled_registry(shared, minilm=minilm_dir(env), chat_port=free_port(),
                                embed_port=free_port())  # fmt: skip
    state = EngineSettings(data_dir=Path(tempfile.mkdtemp(prefix="garrison-bench-")))
    gemma = registry.get(GEMMA)
    assert gemma is not None
    if args.engine_arg:
        # Try engine settings (e.g. --block-size) without editing the bundled registry.
        gemma = gemma.model_copy(update={"engine_args": (*gemma.engine_args, *args.engine_arg)})
        registry = registry.model_copy(update={"deployments": (gemma,)})
    manager = EngineManager(registry, state, python=env.require())
    manager.start(gemma)
    try:
        print(f"waiting for {gemma.name} (about two minutes on 2 cores) ...", flush=True)
        await manager.wait_ready(gemma, timeout_s=900)
        base = manager.url(gemma).removesuffix("/v1")
        async with httpx.AsyncClient(base_url=base, timeout=300) as http:
            s2 = await guided_vs_free(http, gemma.served_name, args.rounds)
            s1 = await prefix_cache(http, gemma.served_name, args.turns)
    finally:
        manager.stop(gemma)
    later = [rate for turn, rate, _ in s1 if turn >= 2]
    ideal = [best for turn, _, best in s1 if turn >= 2]
    print(f"\n{'measure':<58}{'value':>14}")
    print(f"{'S2 TPOT guided (JSON schema), median ms/token':<58}{s2['guided']:>14.2f}")
    print(f"{'S2 TPOT free, same prompt and length, median ms/token':<58}{s2['free']:>14.2f}")
    print(f"{'S2 guided / free (target <= 1.05x)':<58}{s2['guided'] / s2['free']:>13.2f}x")
    print(f"{'   tokens per answer (median)':<58}{s2['tokens']:>14.0f}")
    for turn, rate, best in s1:
        label = f"S1 prefix-cache hit rate, turn {turn} (most possible {best:.1%})"
        print(f"{label:<58}{rate:>13.1%}")
    print(f"{'S1 turns >= 2, mean (target >= 90%)':<58}{statistics.mean(later):>13.1%}")
    share = statistics.mean(later) / statistics.mean(ideal)
    print(f"{'S1 turns >= 2, share of the cacheable prefix that hit':<58}{share:>13.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument(
        "--engine-arg", action="append", default=[], help="extra vLLM argument (repeatable)"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
