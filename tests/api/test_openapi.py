"""The OpenAPI document is the contract clients generate code from: it must declare the bearer
scheme on every /v1 operation and every error response with the one error schema."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import httpx
import pytest

ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture
async def spec(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def operations(spec: dict[str, Any], prefix: str = "/") -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        if path.startswith(prefix)
        for method, operation in item.items()
    ]


async def test_identity_and_bearer_scheme(spec: dict[str, Any]) -> None:
    assert spec["info"]["title"] == "Garrison"
    assert spec["info"]["version"] == version("garrison")
    scheme = spec["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"


async def test_the_expected_routes_are_served(spec: dict[str, Any]) -> None:
    assert sorted((m, p) for m, p, _ in operations(spec)) == [
        ("DELETE", "/v1/documents/{document_id}"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/v1/approvals"),
        ("GET", "/v1/approvals/{approval_id}"),
        ("GET", "/v1/documents"),
        ("GET", "/v1/documents/{document_id}"),
        ("GET", "/v1/documents/{document_id}/chunks"),
        ("GET", "/v1/models"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/runs/{run_id}"),
        ("GET", "/v1/runs/{run_id}/effects"),
        ("GET", "/v1/runs/{run_id}/events"),
        ("GET", "/v1/runs/{run_id}/steps"),
        ("GET", "/v1/search"),
        ("POST", "/v1/approvals/{approval_id}/approve"),
        ("POST", "/v1/approvals/{approval_id}/deny"),
        ("POST", "/v1/documents"),
        ("POST", "/v1/documents/batch"),
        ("POST", "/v1/runs"),
        ("POST", "/v1/runs/{run_id}/cancel"),
        ("POST", "/v1/runs/{run_id}/fork"),
        ("POST", "/v1/runs/{run_id}/replay"),
        ("POST", "/v1/runs/{run_id}/resume"),
    ]


async def test_every_v1_operation_needs_a_key_and_declares_its_errors(
    spec: dict[str, Any],
) -> None:
    v1 = operations(spec, "/v1/")
    assert len(v1) == 22
    for method, path, operation in v1:
        where = f"{method} {path}"
        assert operation["security"] == [{"bearer": []}], where
        responses = operation["responses"]
        for status in ("401", "422", "500", "503"):
            assert status in responses, f"{where} does not declare {status}"
        assert "WWW-Authenticate" in responses["401"]["headers"], where
        assert "Retry-After" in responses["503"]["headers"], where
        if method == "POST":
            assert "413" in responses, where
        if "{" in path:
            assert "404" in responses, where


async def test_every_error_response_uses_the_error_schema(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": ERROR_REF}, f"{method} {path} {status}"
    # FastAPI's own validation-error schema would mean a route escaped our error handling.
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    error = spec["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"code", "message", "request_id"}


async def test_request_bodies_forbid_unknown_fields(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for name in ("RunCreate", "DocumentCreate", "DocumentBatch", "ApproveRequest", "DenyRequest"):
        assert schemas[name]["additionalProperties"] is False, name


async def test_health_probes_need_no_key(spec: dict[str, Any]) -> None:
    for path in ("/healthz", "/readyz"):
        assert "security" not in spec["paths"][path]["get"], path
