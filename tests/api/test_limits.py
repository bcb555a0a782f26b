"""Bodies over `api.max_body_bytes` are refused with 413, whether their size is declared up
front or only discovered while they stream in, and the application never holds more."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from agent.api.limits import BodyLimitMiddleware
from agent.runtime import Settings
from tests.api.conftest import Serve, assert_error, bearer
from tests.conftest import TenantFixture

LIMIT = 1024


@pytest.fixture
def small_body_url(serve: Serve, settings: Settings, database_url: str) -> str:
    api = settings.api.model_copy(update={"max_body_bytes": LIMIT})
    return serve(settings.model_copy(update={"api": api}), database_url)


def run_body(size: int) -> bytes:
    """A valid run request of exactly `size` bytes."""
    empty = json.dumps({"agent": "assistant", "input": ""}).encode()
    body = json.dumps({"agent": "assistant", "input": "x" * (size - len(empty))}).encode()
    assert len(body) == size
    return body


async def chunks(body: bytes, size: int = 256) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def post(
    url: str, tenant: TenantFixture, content: bytes | AsyncIterator[bytes]
) -> httpx.Response:
    headers = {**bearer(tenant.secret), "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=10.0, trust_env=False) as client:
        return await client.post("/v1/runs", content=content, headers=headers)


async def test_declared_length_over_the_limit_is_413(
    small_body_url: str, acme: TenantFixture
) -> None:
    response = await post(small_body_url, acme, run_body(LIMIT + 1))
    assert_error(response, 413, "payload_too_large")


async def test_streamed_body_over_the_limit_is_413(
    small_body_url: str, acme: TenantFixture
) -> None:
    response = await post(small_body_url, acme, chunks(run_body(4 * LIMIT)))
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")


async def test_bodies_at_the_limit_pass_either_way(
    small_body_url: str, acme: TenantFixture
) -> None:
    assert (await post(small_body_url, acme, run_body(LIMIT))).status_code == 202
    assert (await post(small_body_url, acme, chunks(run_body(LIMIT)))).status_code == 202


async def test_the_application_never_holds_more_than_the_limit() -> None:
    """ASGI-level: a streamed body is cut off at the limit before the app sees the excess."""
    seen = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal seen
        while True:
            message = await receive()
            seen += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    incoming = [{"type": "http.request", "body": b"x" * 300, "more_body": True}] * 10
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "state": {}}
    await BodyLimitMiddleware(app, max_body_bytes=LIMIT)(scope, receive, send)
    assert seen <= LIMIT
    assert sent[0]["status"] == 413
    assert json.loads(sent[-1]["body"])["error"]["code"] == "payload_too_large"


@pytest.fixture
def document_limit_url(serve: Serve, settings: Settings, database_url: str) -> str:
    api = settings.api.model_copy(
        update={"max_body_bytes": LIMIT, "max_document_body_bytes": 4 * LIMIT}
    )
    return serve(settings.model_copy(update={"api": api}), database_url)


def document_body(size: int, path: str) -> bytes:
    """A valid document request (one, or a batch of one) of exactly `size` bytes."""

    def body(text: str) -> bytes:
        doc = {"text": text}
        return json.dumps(doc if path == "/v1/documents" else {"documents": [doc]}).encode()

    return body("x" * (size - len(body(""))))


@pytest.mark.parametrize("path", ["/v1/documents", "/v1/documents/batch"])
async def test_document_uploads_have_their_own_limit(
    document_limit_url: str, acme: TenantFixture, path: str
) -> None:
    headers = {**bearer(acme.secret), "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=document_limit_url, trust_env=False) as client:
        fits = await client.post(path, content=document_body(4 * LIMIT, path), headers=headers)
        assert fits.status_code in (200, 201), fits.text
        over = document_body(4 * LIMIT + 1, path)
        error = assert_error(
            await client.post(path, content=over, headers=headers), 413, "payload_too_large"
        )
        assert error["message"] == f"the request body is larger than {4 * LIMIT} bytes"
        streamed = await client.post(path, content=chunks(over), headers=headers)
        assert_error(streamed, 413, "payload_too_large")
        # Every other route keeps the general limit.
        runs = await client.post("/v1/runs", content=run_body(2 * LIMIT), headers=headers)
        assert_error(runs, 413, "payload_too_large")
