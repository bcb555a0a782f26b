"""The scripted model server's own contract: endpoints, recording, embeddings."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import httpx
import pytest

from serving.testing import ScriptedModelServer, deterministic_embedding


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # inputs are unit vectors


@pytest.fixture
async def http(server: ScriptedModelServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url.removesuffix("/v1")) as c:
        yield c


async def test_chat_response_has_the_openai_shape(
    server: ScriptedModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue({"tool": "search", "query": "acme"}, finish_reason="stop")
    messages = [{"role": "user", "content": "find acme"}]

    response = await http.post("/v1/chat/completions", json={"messages": messages})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
    assert body["object"] == "chat.completion"
    assert body["model"] == "scripted"  # no model in the request: the server's own name
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": '{"tool": "search", "query": "acme"}'},
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}


async def test_models_and_health(http: httpx.AsyncClient) -> None:
    models = await http.get("/v1/models")
    health = await http.get("/health")

    assert [m["id"] for m in models.json()["data"]] == ["scripted"]
    assert (health.status_code, health.content) == (200, b"")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/nowhere", 404), ("POST", "/v2/chat", 404), ("GET", "/v1/chat/completions", 405)],
)
async def test_unknown_routes_answer_json_errors(
    http: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await http.request(method, path, json={} if method == "POST" else None)

    assert response.status_code == status
    assert "not served here" in response.json()["error"]["message"]


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b""])
async def test_invalid_json_is_400_and_recorded(
    server: ScriptedModelServer, http: httpx.AsyncClient, payload: bytes
) -> None:
    server.enqueue("unused")

    response = await http.post("/v1/chat/completions", content=payload)

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "request body must be a JSON object"
    assert server.requests[-1].body is None
    assert server.chat_requests == []
    assert server.pending == 1  # a rejected request does not consume the script


async def test_empty_queue_answers_500(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json={"messages": []})

    assert response.status_code == 500
    assert response.json() == {
        "error": {"message": "scripted model has no queued answer", "type": "scripted_error"}
    }


async def test_broken_responder_answers_500(
    server: ScriptedModelServer, http: httpx.AsyncClient
) -> None:
    server.set_responder(lambda request: request["missing"])

    response = await http.post("/v1/chat/completions", json={"messages": []})

    assert response.status_code == 500
    assert "KeyError" in response.json()["error"]["message"]


async def test_embeddings_accept_a_single_string(
    server: ScriptedModelServer, http: httpx.AsyncClient
) -> None:
    response = await http.post("/v1/embeddings", json={"input": "hello there"})

    [row] = response.json()["data"]
    assert row["index"] == 0
    assert row["embedding"] == deterministic_embedding("hello there", 16)


async def test_requests_are_recorded_with_lowercase_headers(
    server: ScriptedModelServer, http: httpx.AsyncClient
) -> None:
    await http.get("/v1/models?verbose=1", headers={"X-Trace": "abc"})

    [recorded] = server.requests
    assert (recorded.method, recorded.path, recorded.body) == ("GET", "/v1/models", None)
    assert recorded.headers["x-trace"] == "abc"


def test_base_url_needs_a_started_server() -> None:
    srv = ScriptedModelServer()
    with pytest.raises(RuntimeError, match="not started"):
        _ = srv.base_url
    with srv:
        assert srv.base_url.startswith("http://127.0.0.1:")
        assert srv.base_url.endswith("/v1")
        with pytest.raises(RuntimeError, match="already started"):
            srv.start()
    srv.stop()  # stopping twice is harmless


def test_deterministic_embedding_is_unit_length_and_stable() -> None:
    vector = deterministic_embedding("Quarterly revenue by region", 384)

    assert len(vector) == 384
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0)
    assert vector == deterministic_embedding("quarterly REVENUE, by region!", 384)
    assert vector == deterministic_embedding("by quarterly region revenue", 384)  # a bag
    # Pinned: a change of hash or tokenisation must fail here, not surface as drifting
    # search results in other packages' tests.
    assert {i: v for i, v in enumerate(vector) if v} == {17: -0.5, 40: 0.5, 181: -0.5, 225: -0.5}


def test_deterministic_embedding_of_empty_text_is_first_axis() -> None:
    assert deterministic_embedding("", 4) == [1.0, 0.0, 0.0, 0.0]
    assert deterministic_embedding("  ?! ", 4) == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="dim"):
        deterministic_embedding("x", 0)


def test_texts_sharing_words_are_closer() -> None:
    query = deterministic_embedding("overdue invoices for acme")
    related = deterministic_embedding("acme has three overdue invoices")
    unrelated = deterministic_embedding("the weather in lisbon is sunny")

    assert cosine(query, related) > 0.5
    assert abs(cosine(query, unrelated)) < 0.2
    assert math.isclose(cosine(query, query), 1.0)
