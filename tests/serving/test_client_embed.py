"""OpenAICompatibleClient.embed and ping against the scripted server."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from serving.client import OpenAICompatibleClient, embed_client
from serving.errors import ModelHTTPError, ModelOutputError
from serving.settings import ServingSettings
from serving.testing import ScriptedModelServer, deterministic_embedding
from serving.testing.loopback import LoopbackHTTPServer, RequestHandler

TEXTS = ["open invoices for ACME", "closed tickets last week", "ACME invoices overdue"]


async def test_embed_returns_vectors_in_input_order(
    server: ScriptedModelServer, client: OpenAICompatibleClient
) -> None:
    result = await client.embed(TEXTS)

    # The scripted server sends rows in reverse; only sorting by "index" gets this right.
    assert result.vectors == [deterministic_embedding(t, 16) for t in TEXTS]
    assert [len(v) for v in result.vectors] == [16, 16, 16]
    assert result.usage.prompt_tokens == 11
    assert result.usage.completion_tokens == 0
    assert result.latency_ms > 0.0
    assert server.requests[-1].body == {"model": "garrison-decide", "input": TEXTS}


async def test_embed_splits_into_batches(server: ScriptedModelServer) -> None:
    texts = [f"text number {i}" for i in range(7)]
    settings = ServingSettings(embed_url=server.base_url, embed_batch_size=3)
    async with embed_client(settings) as client:
        result = await client.embed(texts)

    assert [r.body["input"] for r in server.requests if r.body] == [
        texts[0:3],
        texts[3:6],
        texts[6:7],
    ]
    assert result.vectors == [deterministic_embedding(t, 16) for t in texts]
    assert result.usage.prompt_tokens == 21
    assert result.model == "garrison-embed"


async def test_embed_of_nothing_sends_nothing(
    server: ScriptedModelServer, client: OpenAICompatibleClient
) -> None:
    result = await client.embed([])

    assert result.vectors == []
    assert server.requests == []


async def test_embedding_dimension_follows_server(server: ScriptedModelServer) -> None:
    with ScriptedModelServer(embedding_dim=384) as wide:
        async with OpenAICompatibleClient(wide.base_url, model="e") as client:
            [vector] = (await client.embed(["hello world"])).vectors
    assert len(vector) == 384
    assert math.isclose(sum(v * v for v in vector), 1.0)


async def test_ping_succeeds_and_calls_models(
    server: ScriptedModelServer, client: OpenAICompatibleClient
) -> None:
    await client.ping()

    assert [(r.method, r.path) for r in server.requests] == [("GET", "/v1/models")]


async def test_embed_rejected_input_is_http_error(server: ScriptedModelServer) -> None:
    async with OpenAICompatibleClient(server.base_url, model="e") as client:
        with pytest.raises(ModelHTTPError, match="list of strings") as caught:
            await client.embed([1, 2])  # type: ignore[list-item]
    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        ({"data": [{"index": 0, "embedding": [1.0]}]}, "1 embeddings for 2 inputs"),
        ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]}, "2 emb"),
        (
            {"data": [{"index": 0, "embedding": "AAAA"}, {"index": 1, "embedding": "AA"}]},
            "not float",
        ),
        ({"data": [{"embedding": [1.0]}, {"embedding": [1.0]}]}, "without data"),
        ({"object": "list"}, "without data"),
    ],
)
async def test_malformed_embeddings_are_output_errors(reply: dict[str, Any], match: str) -> None:
    def answer(handler: RequestHandler, method: str) -> None:
        handler.rfile.read(int(handler.headers["Content-Length"]))
        handler.reply(200, reply)

    httpd = LoopbackHTTPServer(("127.0.0.1", 0), answer)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        async with OpenAICompatibleClient(url, model="e") as client:
            with pytest.raises(ModelOutputError, match=match):
                await client.embed(["a", "b"])
    finally:
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        thread.join()
