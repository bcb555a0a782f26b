"""Per-call overhead of the serving client: ours vs a raw httpx POST vs the OpenAI SDK.

All three talk to the same in-process ScriptedModelServer with an instant responder, so the
server's share is the same in every row and the differences are client cost. Rounds are
interleaved so drift (CPU frequency, GC, the other core) spreads evenly across clients.

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
) -> dict[str, list[float]]:
    for call in calls.values():
        for _ in range(warmup):
            await call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    per_round = max(1, n // rounds)
    for r in range(rounds):
        gc.collect()
        # Rotate which client goes first so none always runs right after a GC.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            call, out = calls[name], samples[name]
            for _ in range(per_round):
                start = time.perf_counter()
                await call()
                out.append((time.perf_counter() - start) * 1000.0)
    return samples


async def main(n: int, warmup: int, rounds: int) -> None:
    messages, schema = build_messages(), build_schema()
    with ScriptedModelServer() as server:
        server.set_responder(lambda _request: ANSWER)
        ours = OpenAICompatibleClient(server.base_url, model=MODEL, api_key="bench-key")
        raw = httpx.AsyncClient(trust_env=False)
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

        async def ours_chat() -> object:
            return await ours.chat(messages, json_schema=schema, max_tokens=MAX_TOKENS)

        calls: dict[str, Call] = {"raw httpx POST": raw_post, "OpenAICompatibleClient": ours_chat}
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
            samples = await measure(calls, n, warmup, rounds)
        finally:
            await ours.aclose()
            await raw.aclose()
            if sdk is not None:
                await sdk.close()

    report(samples, len(body), n)


def report(samples: dict[str, list[float]], body_bytes: int, n: int) -> None:
    raw_name = next(iter(samples))
    raw50, raw90 = percentile(samples[raw_name], 50), percentile(samples[raw_name], 90)
    print(f"chat call, 20 messages, 10 tool variants, {body_bytes} B request, N={n} per client")
    print(f"{'client':<28}{'p50 ms':>9}{'p90 ms':>9}{'p50/raw':>9}{'p90/raw':>9}")
    for name, values in samples.items():
        p50, p90 = percentile(values, 50), percentile(values, 90)
        print(f"{name:<28}{p50:>9.3f}{p90:>9.3f}{p50 / raw50:>9.2f}{p90 / raw90:>9.2f}")
    ours50 = percentile(samples["OpenAICompatibleClient"], 50)
    print(f"client overhead (ours p50 - raw p50): {ours50 - raw50:.3f} ms (target <= 1 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="measured calls per client")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured calls per client")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.warmup, args.rounds))
