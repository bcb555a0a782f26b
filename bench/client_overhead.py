"""Per-call overhead of the serving client: ours vs raw aiohttp and httpx POSTs vs the OpenAI SDK.

All talk to the same in-process ScriptedModelServer with an instant responder, so the server's
share is the same in every row and the differences are client cost. Rounds are interleaved so
drift (CPU frequency, GC, the other core) spreads evenly across clients. Besides latency, each
client's CPU time per call is reported one call at a time and with 200 calls in flight, which is
what decides how many steps a worker can drive per core (and why the client runs on its own
keep-alive pool with httptools parsing answers: `serving/transport.py`). Needs the bench extra
(`pip install -e '.[bench]'`: aiohttp and the OpenAI SDK are peers here, not runtime deps).

    .venv/bin/python -m bench.client_overhead [--calls 2000] [--warmup 200] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx

from serving.client import OpenAICompatibleClient
from serving.testing import ScriptedModelServer
from serving.types import Message

MODEL = "garrison-decide"
MAX_TOKENS = 256
TOOLS = [
    "search_tickets",
    "get_ticket",
    "list_customers",
    "get_invoice",
    "sql_query",
    "vector_search",
    "send_email",
    "create_task",
    "summarise",
    "final_answer",
]
ANSWER = json.dumps({"tool": "search_tickets", "args": {"query": "overdue acme", "limit": 5}})

Call = Callable[[], Awaitable[object]]
IN_FLIGHT = 32
"""Calls outstanding at once in the busy measurement (the in-process test server accepts about
this many; bench/durable_overhead.py drives 1,000 runs against a separate server)."""


def build_messages(count: int = 20, chars: int = 200) -> list[Message]:
    """A system prompt and alternating user/assistant turns, each about ``chars`` long."""
    filler = "The quarterly report lists open invoices, overdue tickets and customer notes. "
    messages: list[Message] = []
    for i in range(count):
        role = "system" if i == 0 else ("user" if i % 2 else "assistant")
        messages.append({"role": role, "content": f"[{i}] {filler * 3}"[:chars]})
    return messages


def build_schema() -> dict[str, Any]:
    """One JSON-schema variant per tool, like the agent's action schema."""
    variants = [
        {
            "type": "object",
            "properties": {
                "tool": {"const": name},
                "args": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "maxLength": 200},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 50},
                        "reason": {"type": "string", "maxLength": 120},
                    },
                    "required": ["query"],
                    "additionalProperties": False,
                },
            },
            "required": ["tool", "args"],
            "additionalProperties": False,
        }
        for name in TOOLS
    ]
    return {"anyOf": variants}


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


async def measure(
    calls: dict[str, Call], n: int, warmup: int, rounds: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Latency samples per client, and CPU ms per call (this process) per client."""
    for call in calls.values():
        for _ in range(warmup):
            await call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, float] = dict.fromkeys(calls, 0.0)
    names = list(calls)
    per_round = max(1, n // rounds)
    for r in range(rounds):
        gc.collect()
        # Rotate which client goes first so none always runs right after a GC.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            call, out = calls[name], samples[name]
            cpu_start = time.process_time()
            for _ in range(per_round):
                start = time.perf_counter()
                await call()
                out.append((time.perf_counter() - start) * 1000.0)
            cpu[name] += time.process_time() - cpu_start
    return samples, {name: total * 1000.0 / len(samples[name]) for name, total in cpu.items()}


async def measure_in_flight(calls: dict[str, Call], in_flight: int, each: int) -> dict[str, float]:
    """CPU ms per call with `in_flight` calls outstanding at once, as a busy worker makes them."""
    cpu: dict[str, float] = {}
    for name, call in calls.items():

        async def caller(call: Call = call) -> None:
            for _ in range(each):
                await call()

        gc.collect()
        start = time.process_time()
        await asyncio.gather(*(caller() for _ in range(in_flight)))
        cpu[name] = (time.process_time() - start) * 1000.0 / (in_flight * each)
    return cpu


async def main(n: int, warmup: int, rounds: int) -> None:
    messages, schema = build_messages(), build_schema()
    with ScriptedModelServer() as server:
        server.set_responder(lambda _request: ANSWER)
        ours = OpenAICompatibleClient(server.base_url, model=MODEL, api_key="bench-key")
        raw = httpx.AsyncClient(trust_env=False)
        raw_aio = aiohttp.ClientSession(trust_env=False)
        # The exact bytes our client sends, so the raw row pays only for HTTP.
        payload = {
            "model": MODEL,
            "messages": messages,
            "max_tokens": MAX_TOKENS,
            "temperature": 0.0,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "action", "schema": schema, "strict": True},
            },
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        raw_headers = {"Content-Type": "application/json", "Authorization": "Bearer bench-key"}
        chat_url = f"{server.base_url}/chat/completions"

        async def raw_post() -> object:
            response = await raw.post(chat_url, content=body, headers=raw_headers)
            assert response.status_code == 200, response.text
            return response

        async def raw_aio_post() -> object:
            async with raw_aio.post(chat_url, data=body, headers=raw_headers) as response:
                assert response.status == 200
                return await response.read()

        async def ours_chat() -> object:
            return await ours.chat(messages, json_schema=schema, max_tokens=MAX_TOKENS)

        calls: dict[str, Call] = {
            "raw aiohttp POST": raw_aio_post,
            "raw httpx POST": raw_post,
            "OpenAICompatibleClient": ours_chat,
        }
        sdk: Any = None
        try:
            import openai  # optional peer (bench extra); imported only for this row
        except ImportError:
            print("openai not installed: pip install -e '.[bench]'")
        else:
            sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="bench-key", max_retries=0)

            async def sdk_chat() -> object:
                return await sdk.chat.completions.create(
                    model=MODEL,
                    messages=messages,
                    response_format=payload["response_format"],
                    max_tokens=MAX_TOKENS,
                    temperature=0.0,
                )

            calls[f"openai SDK {openai.__version__}"] = sdk_chat

        try:
            samples, cpu = await measure(calls, n, warmup, rounds)
            # The SDK's own retries and pool limits make it fail against the small test server
            # under load, so the busy figure compares the transports and our client.
            busy = await measure_in_flight(
                {k: c for k, c in calls.items() if not k.startswith("openai")}, IN_FLIGHT, 5
            )
        finally:
            await ours.aclose()
            await raw.aclose()
            await raw_aio.close()
            if sdk is not None:
                await sdk.close()

    report(samples, cpu, busy, len(body), n)


def report(
    samples: dict[str, list[float]],
    cpu: dict[str, float],
    busy: dict[str, float],
    body_bytes: int,
    n: int,
) -> None:
    raw_name = next(iter(samples))
    raw50, raw90 = percentile(samples[raw_name], 50), percentile(samples[raw_name], 90)
    print(f"chat call, 20 messages, 10 tool variants, {body_bytes} B request, N={n} per client")
    print(
        f"(ratios are to {raw_name}; CPU is this process's per call, the in-process server's"
        " share included, which is the same for every client)"
    )
    print(
        f"{'client':<28}{'p50 ms':>9}{'p90 ms':>9}{'p50/raw':>9}{'p90/raw':>9}"
        f"{'CPU ms':>9}{f'CPU @{IN_FLIGHT}':>10}"
    )
    for name, values in samples.items():
        p50, p90 = percentile(values, 50), percentile(values, 90)
        print(
            f"{name:<28}{p50:>9.3f}{p90:>9.3f}{p50 / raw50:>9.2f}{p90 / raw90:>9.2f}"
            f"{cpu[name]:>9.3f}{busy[name] if name in busy else float('nan'):>10.3f}"
        )
    ours50 = percentile(samples["OpenAICompatibleClient"], 50)
    print(f"client overhead (ours p50 - raw p50): {ours50 - raw50:.3f} ms (target <= 1 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="measured calls per client")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured calls per client")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.warmup, args.rounds))
