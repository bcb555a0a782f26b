"""The bundled CPU engines for real: a schema-valid decision from Gemma 3 270M, MiniLM
embeddings, a hung engine timing out, a killed engine failing fast and coming back under the
supervisor. Order matters only for the last test, which kills an engine (and restores it)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from agent.context import system_prompt, task_message
from agent.decision import action_schema, parse_action, parse_decision
from agent.domain import AgentDefinition
from agent.outbox.settings import OutboxSettings
from agent.settings import AgentSettings
from agent.tools import DEFAULT_TOOLS, build_tools
from serving.client import OpenAICompatibleClient
from serving.engine import pids
from serving.engine.supervisor import Supervisor
from serving.errors import ModelTimeout, ModelUnavailable
from tests.engine.conftest import MEASURED, Engines, log_tail

pytestmark = pytest.mark.engine

AGENT = AgentDefinition(
    id=uuid.uuid4(),
    tenant_id=uuid.uuid4(),
    name="assistant",
    instructions="Answer questions from the organisation's documents.",
    allowed_tools=("search_documents", "finish"),
    model_role="decide",
    max_steps=5,
    retrieval_k=2,
    version=1,
    created_at=datetime.now(UTC),
)
# The bundled 270M model is shown the two tools its demo agent has (the others need config).
BY_NAME = {n: t for n, t in build_tools(OutboxSettings()).items() if n in DEFAULT_TOOLS}
TOOLS = list(BY_NAME.values())


def decision_messages(task: str) -> list[dict[str, str]]:
    # The loop's own first-step context, so the test exercises what runs will send.
    return [
        {"role": "system", "content": system_prompt(AGENT, TOOLS)},
        {"role": "user", "content": task_message(task, [])},
    ]


async def test_the_chat_engine_answers_a_schema_valid_decision(engines: Engines) -> None:
    # max_tokens is what the loop uses: the action schema bounds every string (FACTS.md), and
    # a cut-off answer would raise ModelOutputError here rather than pass as valid.
    max_tokens = AgentSettings().decision_max_tokens
    async with OpenAICompatibleClient(
        engines.url(engines.gemma), model=engines.gemma.served_name, timeout_s=120
    ) as client:
        result = await client.chat(
            decision_messages("What is our refund policy?"),
            json_schema=action_schema(TOOLS),
            max_tokens=max_tokens,
        )
        # A second decision: the first one also paid for compiling the schema's grammar.
        warm = await client.chat(
            decision_messages("Who approves purchase orders?"),
            json_schema=action_schema(TOOLS),
            max_tokens=max_tokens,
        )
    for answer in (result, warm):
        action = parse_action(answer.content, BY_NAME)
        assert action.tool in BY_NAME
        assert answer.finish_reason == "stop"
        assert answer.usage.prompt_tokens > 50
        assert 0 < answer.usage.completion_tokens <= max_tokens
        assert answer.model == engines.gemma.served_name
    MEASURED["first decision latency (ms, cold)"] = round(result.latency_ms)
    MEASURED["second decision latency (ms)"] = round(warm.latency_ms)
    MEASURED["decision"] = result.content.replace("\n", " ")[:200]


async def test_the_chat_engine_answers_within_the_parallel_calls_schema(engines: Engines) -> None:
    # An agent allowed three calls per decision: the schema offers {"calls": [...]} besides one
    # call, and the loop allows three decisions' worth of tokens for it.
    agent = dataclasses.replace(AGENT, parallel_calls=3)
    messages = [
        {"role": "system", "content": system_prompt(agent, TOOLS)},
        {"role": "user", "content": task_message("Compare the refund and travel policies.", [])},
    ]
    max_tokens = AgentSettings().decision_max_tokens * 3
    async with OpenAICompatibleClient(
        engines.url(engines.gemma), model=engines.gemma.served_name, timeout_s=120
    ) as client:
        answer = await client.chat(
            messages, json_schema=action_schema(TOOLS, 3), max_tokens=max_tokens
        )
    actions = parse_decision(answer.content, BY_NAME, 3)
    assert 1 <= len(actions) <= 3
    assert answer.finish_reason == "stop"
    MEASURED["parallel-calls decision"] = answer.content.replace("\n", " ")[:200]


def test_the_imported_tokenizer_renders_our_chat_template(engines: Engines) -> None:
    # What vLLM renders for a chat request: the template stored with the imported tokenizer.
    script = (
        "import json, sys; from transformers import AutoTokenizer; "
        "tok = AutoTokenizer.from_pretrained(sys.argv[1]); "
        "print(json.dumps(tok.apply_chat_template(json.loads(sys.argv[2]), tokenize=False, "
        "add_generation_prompt=True)))"
    )
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    python = engines.manager.python
    assert python is not None
    done = subprocess.run(
        [str(python), "-c", script, engines.gemma.model, json.dumps(messages)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rendered = json.loads(done.stdout.strip().splitlines()[-1])
    assert (
        rendered == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    )


async def test_decode_speed_is_measured(engines: Engines) -> None:
    url = engines.url(engines.gemma) + "/completions"
    body = {
        "model": engines.gemma.served_name,
        "prompt": "Once upon a time",
        "max_tokens": 128,
        "ignore_eos": True,
        "temperature": 0,
    }
    async with httpx.AsyncClient(trust_env=False, timeout=120) as http:
        started = time.perf_counter()
        response = await http.post(url, json=body)
        elapsed = time.perf_counter() - started
    response.raise_for_status()
    tokens = response.json()["usage"]["completion_tokens"]
    assert tokens == 128
    MEASURED["decode tokens/s (128 tokens, one request)"] = round(tokens / elapsed, 1)
    assert tokens / elapsed > 2  # a sanity floor, not a benchmark


async def test_the_embedding_engine_returns_unit_vectors_of_384(engines: Engines) -> None:
    texts = ["How do I get a refund?", "Refund policy for returned goods", "It is sunny in Paris"]
    async with OpenAICompatibleClient(
        engines.url(engines.minilm), model=engines.minilm.served_name, timeout_s=60
    ) as client:
        result = await client.embed(texts)
    assert [len(v) for v in result.vectors] == [384, 384, 384]
    assert all(math.isfinite(x) for v in result.vectors for x in v)
    for vector in result.vectors:
        assert math.sqrt(sum(x * x for x in vector)) == pytest.approx(1.0, abs=1e-2)
    refund, policy, weather = result.vectors
    assert dot(refund, policy) > dot(refund, weather)
    assert result.usage.prompt_tokens > 0


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_a_hung_engine_times_out_and_answers_again_when_it_resumes(
    engines: Engines,
) -> None:
    record = engines.manager.status(engines.gemma).record
    assert record is not None
    messages = [{"role": "user", "content": "Say hello."}]
    url, model = engines.url(engines.gemma), engines.gemma.served_name
    pids.signal_group(record.pid, signal.SIGSTOP)  # the server and its engine core freeze
    try:
        async with OpenAICompatibleClient(url, model=model, timeout_s=2) as client:
            started = time.perf_counter()
            with pytest.raises(ModelTimeout):
                await client.chat(messages, max_tokens=8)
            assert time.perf_counter() - started < 5
    finally:
        pids.signal_group(record.pid, signal.SIGCONT)
    async with OpenAICompatibleClient(url, model=model, timeout_s=60) as client:
        result = await client.chat(messages, max_tokens=8)
    assert result.usage.completion_tokens > 0
    assert engines.manager.status(engines.gemma).state == "running"


async def test_a_killed_engine_is_unavailable_then_restarted_by_the_supervisor(
    engines: Engines,
) -> None:
    manager, minilm = engines.manager, engines.minilm
    before = manager.status(minilm).record
    assert before is not None
    os.kill(before.pid, signal.SIGKILL)
    async with OpenAICompatibleClient(
        engines.url(minilm), model=minilm.served_name, timeout_s=10
    ) as client:
        with pytest.raises(ModelUnavailable):
            await client.embed(["anyone there?"])
        # A SIGKILLed process of gigabytes takes a moment to be torn down and reaped.
        async with asyncio.timeout(30):
            while manager.status(minilm).state != "dead":
                await asyncio.sleep(0.1)
        supervisor = Supervisor(manager, max_restarts=2, backoff_s=1, poll_s=0.5)
        watcher = asyncio.create_task(supervisor.run())
        started = time.perf_counter()
        try:
            async with asyncio.timeout(600):
                while not (await manager.health(minilm)).ok:
                    await asyncio.sleep(1)
        except TimeoutError:
            pytest.fail(f"minilm did not come back; its log:\n{log_tail(engines, minilm)}")
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        MEASURED["minilm restart to ready (s)"] = round(time.perf_counter() - started, 1)
        result = await client.embed(["back again"])
    assert len(result.vectors[0]) == 384
    after = manager.status(minilm).record
    assert after is not None
    assert after.pid != before.pid
    assert supervisor.watches[minilm.name].total_restarts == 1
    # The dead server's engine core and workers did not outlive the restart.
    assert pids.remains(before.pid, before.command[0]) == []
