"""OpenAICompatibleClient.chat against the scripted server over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from serving.client import OpenAICompatibleClient
from serving.errors import ModelOutputError
from serving.testing import ScriptedModelServer
from serving.types import ChatResult, Message, Usage
from tests.serving.conftest import API_KEY

MESSAGES: list[Message] = [
    {"role": "system", "content": "You are a careful operator."},
    {"role": "user", "content": "How many open tickets are there today?"},
]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"tool": {"type": "string", "maxLength": 32}},
    "required": ["tool"],
    "additionalProperties": False,
}


async def test_chat_returns_content_and_sends_openai_request(
    server: ScriptedModelServer, client: OpenAICompatibleClient
) -> None:
    server.enqueue("There are 12 open tickets.")

    result = await client.chat(MESSAGES, max_tokens=64, temperature=0.2)

    assert result.content == "There are 12 open tickets."
    assert result.finish_reason == "stop"
    assert result.model == "garrison-decide"
    [request] = server.chat_requests
    assert request == {
        "model": "garrison-decide",
        "messages": MESSAGES,
        "max_tokens": 64,
        "temperature": 0.2,
    }
    recorded = server.requests[-1]
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.headers["authorization"] == f"Bearer {API_KEY}"
    assert recorded.headers["content-type"] == "application/json"


async def test_chat_sends_response_format_with_schema(
    server: ScriptedModelServer, client: OpenAICompatibleClient
) -> None:
    server.enqueue({"tool": "count_tickets"})

    result = await client.chat(MESSAGES, json_schema=SCHEMA, schema_name="decide")

    assert json.loads(result.content) == {"tool": "count_tickets"}
    assert server.chat_requests[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "decide", "schema": SCHEMA, "strict": True},
    }


async def test_chat_accepts_a_tuple_of_messages(
    server: ScriptedModelServer, client: OpenAICompatibleClient
) -> None:
    server.enqueue("ok")

    await client.chat(tuple(MESSAGES))

    assert server.chat_requests[0]["messages"] == MESSAGES


async def test_usage_and_latency_are_captured(
    server: ScriptedModelServer, client: OpenAICompatibleClient
) -> None:
    server.enqueue("fine", prompt_tokens=321, completion_tokens=7, delay_s=0.05)
    server.enqueue("three word answer")

    scripted = await client.chat(MESSAGES)
    counted = await client.chat(MESSAGES)

    assert scripted.usage == Usage(prompt_tokens=321, completion_tokens=7)
    assert scripted.usage.total_tokens == 328
    assert 50.0 <= scripted.latency_ms < 2000.0
    # Default counts are word counts: 5 + 7 prompt words, 3 answer words.
    assert counted.usage == Usage(prompt_tokens=12, completion_tokens=3)
    assert 0.0 < counted.latency_ms < scripted.latency_ms


async def test_missing_usage_reads_as_zeros(
    server: ScriptedModelServer, client: OpenAICompatibleClient
) -> None:
    server.enqueue_error(200, json.dumps({"choices": [{"message": {"content": "hi"}}]}))

    result = await client.chat(MESSAGES)

    assert result == ChatResult(
        content="hi",
        finish_reason="unknown",
        usage=Usage(0, 0),
        latency_ms=result.latency_ms,
        model="garrison-decide",
    )


async def test_answers_come_back_in_queued_order(
    server: ScriptedModelServer, client: OpenAICompatibleClient
) -> None:
    for answer in ("first", "second", "third"):
        server.enqueue(answer)
    assert server.pending == 3

    contents = [(await client.chat(MESSAGES)).content for _ in range(3)]

    assert contents == ["first", "second", "third"]
    assert server.pending == 0
    assert len(server.chat_requests) == 3


async def test_responder_answers_when_queue_is_empty(
    server: ScriptedModelServer, client: OpenAICompatibleClient
) -> None:
    server.enqueue("queued")
    server.set_responder(lambda request: f"echo {len(request['messages'])} messages")

    first = await client.chat(MESSAGES)
    second = await client.chat(MESSAGES)

    assert (first.content, second.content) == ("queued", "echo 2 messages")


async def test_length_cut_with_schema_is_invalid_output(
    server: ScriptedModelServer, client: OpenAICompatibleClient
) -> None:
    server.enqueue('{"tool": "count_tick', finish_reason="length")

    with pytest.raises(ModelOutputError, match="max_tokens=16") as caught:
        await client.chat(MESSAGES, json_schema=SCHEMA, max_tokens=16)

    assert caught.value.code == "model_output_invalid"


async def test_length_cut_without_schema_is_returned(
    server: ScriptedModelServer, client: OpenAICompatibleClient
) -> None:
    server.enqueue("a long rambling", finish_reason="length")

    result = await client.chat(MESSAGES, max_tokens=3)

    assert (result.content, result.finish_reason) == ("a long rambling", "length")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("<html>proxy error</html>", "not JSON"),
        ("", "not JSON"),
        (json.dumps({"object": "chat.completion", "choices": []}), "without choices"),
        (json.dumps({"choices": [{"message": {"role": "assistant"}}]}), "without choices"),
        (json.dumps({"choices": [{"message": {"content": None}}]}), "no text content"),
        (json.dumps({"choices": [{"message": {"content": ""}}]}), "no text content"),
        (json.dumps(["not", "an", "object"]), "without choices"),
    ],
)
async def test_unusable_2xx_body_is_model_output_error(
    server: ScriptedModelServer, client: OpenAICompatibleClient, body: str, match: str
) -> None:
    server.enqueue_error(200, body)

    with pytest.raises(ModelOutputError, match=match):
        await client.chat(MESSAGES)
