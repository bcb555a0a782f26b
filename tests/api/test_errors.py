"""Every caller mistake gets its status and code in the error schema: never a 500, never a
traceback, never the offending input echoed back."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from agent.errors import Conflict, Forbidden, IllegalTransition
from agent.runtime import Settings
from tests.api.conftest import Serve, assert_error, bearer
from tests.conftest import TenantFixture

RUN = {"agent": "assistant", "input": "hello"}


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/runs/{uuid.uuid4()}",
        f"/v1/runs/{uuid.uuid4()}/steps",
        "/v1/runs/not-a-uuid",
        "/v1/runs/not-a-uuid/steps",
        "/v1/runs/1%27%20OR%201=1--",
        f"/v1/documents/{uuid.uuid4()}",
        "/v1/documents/42",
        "/v1/nothing-here",
        "/",
    ],
)
async def test_unknown_objects_and_routes_are_404(
    client: httpx.AsyncClient, acme: TenantFixture, path: str
) -> None:
    error = assert_error(await client.get(path, headers=bearer(acme.secret)), 404, "not_found")
    assert "details" not in error


async def test_unknown_agent_is_404(client: httpx.AsyncClient, acme: TenantFixture) -> None:
    body = {"agent": "no-such-agent", "input": "hello"}
    response = await client.post("/v1/runs", json=body, headers=bearer(acme.secret))
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/v1/runs"), ("PUT", "/v1/documents"), ("POST", "/healthz")],
)
async def test_wrong_method_is_405(
    client: httpx.AsyncClient, acme: TenantFixture, method: str, path: str
) -> None:
    response = await client.request(method, path, headers=bearer(acme.secret))
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"agent": "assistant"}, ["body", "input"]),  # missing field
        ({"agent": 123, "input": "hello"}, ["body", "agent"]),  # wrong type
        ({"agent": "assistant", "input": ["a"]}, ["body", "input"]),  # wrong type
        ({**RUN, "priority": "high"}, ["body", "priority"]),  # unknown field
        ({"agent": "assistant", "input": ""}, ["body", "input"]),  # empty
        ({"agent": "a" * 65, "input": "hello"}, ["body", "agent"]),  # too long
        ({"agent": "assistant", "input": "nul \x00 byte"}, ["body", "input"]),  # unstorable
        ([RUN], ["body"]),  # not an object
    ],
)
async def test_invalid_run_bodies_are_422_with_details(
    client: httpx.AsyncClient, acme: TenantFixture, body: Any, loc: list[str]
) -> None:
    response = await client.post("/v1/runs", json=body, headers=bearer(acme.secret))
    error = assert_error(response, 422, "invalid_request")
    assert loc in [d["loc"] for d in error["details"]], error
    assert all(set(d) == {"loc", "msg"} for d in error["details"])


@pytest.mark.parametrize(
    "raw",
    [
        b'{"agent": "assistant", "input": ',  # truncated
        b"{'agent': 'assistant'}",  # not JSON
        b'{"agent": "assistant", "input": "\\ud800"}',  # lone surrogate
        b"\xff\xfe garbage",  # a UTF-16 byte order mark, then nonsense
        b'{"agent": "assistant", "input": "\xff"}',  # not UTF-8
        b'{"agent": "assistant", "input": ' + b"9" * 5000 + b"}",  # int too long for Python
        b"[" * 5000 + b"]" * 5000,  # nested deeper than the parser recurses
    ],
)
async def test_malformed_json_is_422(
    client: httpx.AsyncClient, acme: TenantFixture, raw: bytes
) -> None:
    headers = {**bearer(acme.secret), "Content-Type": "application/json"}
    response = await client.post("/v1/runs", content=raw, headers=headers)
    assert_error(response, 422, "invalid_request")


async def test_blank_input_is_a_caller_error(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    body = {"agent": "assistant", "input": "   \n "}
    response = await client.post("/v1/runs", json=body, headers=bearer(acme.secret))
    assert_error(response, 422, "invalid_request")


async def test_oversized_input_is_not_echoed(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    body = {"agent": "assistant", "input": "Z" * 20_001}
    response = await client.post("/v1/runs", json=body, headers=bearer(acme.secret))
    assert_error(response, 422, "invalid_request")
    assert "ZZZZ" not in response.text
    assert len(response.content) < 1000


@pytest.mark.parametrize(
    "body",
    [
        {"title": "t", "text": "x", "metadata": ["not", "an", "object"]},
        {"title": "t", "text": "x", "metadata": {"deep": {"key\x00": 1}}},
        {"title": "t", "text": "x", "metadata": {"big": "m" * 20_000}},
        {"title": "", "text": "x"},
        {"title": "   ", "text": "x"},
        {"title": "t" * 301, "text": "x"},
        {"title": "t", "text": ""},
        {"title": "t", "text": "x", "source": ""},
        {"title": "t", "text": "x", "owner": "me"},
    ],
)
async def test_invalid_documents_are_422(
    client: httpx.AsyncClient, acme: TenantFixture, body: dict[str, Any]
) -> None:
    response = await client.post("/v1/documents", json=body, headers=bearer(acme.secret))
    assert_error(response, 422, "invalid_request")


async def test_non_finite_metadata_is_422(client: httpx.AsyncClient, acme: TenantFixture) -> None:
    # Python's json module reads NaN and 1e999; Postgres' jsonb stores neither.
    headers = {**bearer(acme.secret), "Content-Type": "application/json"}
    for number in (b"NaN", b"1e999", b"-Infinity"):
        raw = b'{"title": "t", "text": "x", "metadata": {"n": ' + number + b"}}"
        response = await client.post("/v1/documents", content=raw, headers=headers)
        assert_error(response, 422, "invalid_request")


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=201", "limit=ten", "status=sleeping", "limit=99999999999999999999"]
)
async def test_invalid_list_queries_are_422(
    client: httpx.AsyncClient, acme: TenantFixture, query: str
) -> None:
    response = await client.get(f"/v1/runs?{query}", headers=bearer(acme.secret))
    error = assert_error(response, 422, "invalid_request")
    assert error["details"][0]["loc"][0] == "query"


async def test_request_id_is_echoed_when_sane_and_replaced_otherwise(
    client: httpx.AsyncClient,
) -> None:
    sane = await client.get("/healthz", headers={"X-Request-ID": "client-42.retry:1"})
    assert sane.headers["x-request-id"] == "client-42.retry:1"
    for bad in ("has spaces", "x" * 65, "line\tbreak", "<script>", ""):
        response = await client.get("/nope", headers={"X-Request-ID": bad})
        chosen = response.headers["x-request-id"]
        assert chosen != bad
        assert uuid.UUID(hex=chosen).version == 4
        assert response.json()["error"]["request_id"] == chosen


async def test_a_bug_is_a_500_without_its_text(
    serve: Serve, settings: Settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    def add_broken_route(app: FastAPI) -> None:
        async def broken() -> None:
            raise RuntimeError("password=hunter2 in SELECT * FROM secrets")

        app.add_api_route("/broken", broken)

    base_url = serve(settings, database_url, customize=add_broken_route)
    async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
        response = await client.get("/broken", headers={"X-Request-ID": "bug-1"})
    error = assert_error(response, 500, "internal_error")
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    # The operator gets the whole story, under the same request id.
    logged = [r for r in caplog.records if "bug-1" in r.getMessage()]
    assert logged
    assert logged[0].exc_info is not None
    assert error["request_id"] == "bug-1"


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (Forbidden("no"), 403, "forbidden"),
        (Conflict("busy"), 409, "conflict"),
        (IllegalTransition("succeeded -> running"), 409, "illegal_transition"),
    ],
)
def test_errors_no_route_raises_yet_have_their_status(
    exc: Exception, status: int, code: str
) -> None:
    from agent.api.errors import problem_for

    problem = problem_for(exc)
    assert (problem.status, problem.code) == (status, code)


async def test_deeply_nested_metadata_is_a_short_422(
    client: httpx.AsyncClient, acme: TenantFixture
) -> None:
    depth = 900
    raw = '{"title": "t", "text": "x", "metadata": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
    headers = {**bearer(acme.secret), "Content-Type": "application/json"}
    response = await client.post("/v1/documents", content=raw.encode(), headers=headers)
    error = assert_error(response, 422, "invalid_request")
    assert all(len(d["loc"]) <= 17 for d in error["details"])
    assert len(response.content) < 2000
