"""Every operation the served OpenAPI document lists, ready to call.

The access tests enumerate operations from the live `/openapi.json` rather than from a list of
their own, so a route added later is tested (or fails the tests) without anyone remembering to
add it here. What cannot be derived from the document is a valid request body per operation;
an operation with a body and no sample here fails `request_body` loudly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from agent.api.roles import PUBLIC_ROUTES
from agent.domain import Role

NO_SUCH_ID = "00000000-0000-4000-8000-000000000000"
_PARAM = re.compile(r"\{([a-z_]+)\}")

SAMPLE_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/runs"): {"agent": "assistant", "input": "What is the leave policy?"},
    ("POST", "/v1/runs/{run_id}/fork"): {"from_step": 0},
    ("POST", "/v1/documents"): {"title": "Leave", "text": "Thirty days of annual leave."},
    ("POST", "/v1/documents/batch"): {"documents": [{"title": "Leave", "text": "Thirty days."}]},
    ("POST", "/v1/approvals/{approval_id}/approve"): {"reason": "fine"},
    ("POST", "/v1/approvals/{approval_id}/deny"): {"reason": "not now"},
}
SAMPLE_QUERIES: dict[tuple[str, str], dict[str, str]] = {
    ("GET", "/v1/search"): {"q": "annual leave"},
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    """The path template, e.g. `/v1/runs/{run_id}`."""
    role: Role | None
    """`x-required-role` as the document states it; None for a public operation."""
    has_body: bool
    responses: frozenset[str]

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.path)

    @property
    def public(self) -> bool:
        return self.key in PUBLIC_ROUTES

    def url(self, **ids: str) -> str:
        """The path with each `{param}` replaced by `ids[param]` (default: an unknown id)."""
        return _PARAM.sub(lambda m: ids.get(m.group(1), NO_SUCH_ID), self.path)

    def request_body(self) -> Any:
        if not self.has_body:
            return None
        if self.key not in SAMPLE_BODIES:
            raise AssertionError(f"{self.method} {self.path}: add a sample body to SAMPLE_BODIES")
        return SAMPLE_BODIES[self.key]

    def query(self) -> dict[str, str]:
        return SAMPLE_QUERIES.get(self.key, {})

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


async def served_operations(client: httpx.AsyncClient) -> list[Operation]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    found = []
    for path, item in response.json()["paths"].items():
        for method, operation in item.items():
            role = operation.get("x-required-role")
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    role=Role(role) if role is not None else None,
                    has_body="requestBody" in operation,
                    responses=frozenset(operation["responses"]),
                )
            )
    return sorted(found, key=lambda o: (o.path, o.method))


async def call(
    client: httpx.AsyncClient,
    op: Operation,
    headers: dict[str, str],
    body: Any = None,
    **ids: str,
) -> httpx.Response:
    """Call `op` once; a streaming answer (events) is read only up to its status line."""
    payload = body if body is not None else op.request_body()
    request = client.build_request(
        op.method, op.url(**ids), headers=headers, json=payload, params=op.query()
    )
    response = await client.send(request, stream=True)
    try:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response  # a live stream: the status is what is asked about
        await response.aread()
        return response
    finally:
        await response.aclose()
