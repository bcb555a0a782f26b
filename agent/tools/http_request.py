"""`http_request`: queue one HTTP request to an allow-listed host; the dispatcher sends it.

The tool never opens a connection. It refuses, with `egress_denied` and nothing queued, a URL
whose host is not on the allow-list, whose scheme is not http(s), or that carries credentials;
otherwise it returns an `OutboxEffect` committed with the step. The body is JSON text in a
bounded string (an object with free keys cannot be bounded for guided decoding, FACTS.md), and
headers are bounded `Name: value` strings whose shape is a pattern in the schema.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator

from agent.domain import OutboxEffect, effect_key
from agent.outbox.egress import EGRESS_DENIED, EgressPolicy
from agent.outbox.settings import OutboxSettings
from agent.tools.base import Tool, ToolArguments, ToolContext, ToolResult
from agent.tools.send_email import refused

HEADER_PATTERN = r"^[A-Za-z0-9-]{1,64}: [^\r\n]{1,256}$"
Header = Annotated[str, StringConstraints(min_length=4, max_length=330, pattern=HEADER_PATTERN)]
# Set by the dispatcher or by httpx; a model-chosen value would lie about the request.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "idempotency-key", "user-agent"}
)


class HttpRequestArgs(ToolArguments):
    method: Literal["POST", "PUT", "PATCH", "DELETE", "GET"]
    url: str = Field(min_length=8, max_length=2000, description="An http(s) URL.")
    body: str | None = Field(
        default=None, max_length=2000, description="The JSON body, as JSON text."
    )
    headers: list[Header] = Field(
        default_factory=list, max_length=8, description='Extra headers, e.g. ["X-Team: ops"].'
    )

    @field_validator("body")
    @classmethod
    def _json(cls, value: str | None) -> str | None:
        if value is not None:
            json.loads(value)  # a ValueError here is an invalid decision the model sees
        return value

    @field_validator("headers")
    @classmethod
    def _allowed_headers(cls, value: list[str]) -> list[str]:
        names = [h.split(":", 1)[0].lower() for h in value]
        reserved = sorted(set(names) & RESERVED_HEADERS)
        if reserved:
            raise ValueError(f"these headers are set by Garrison: {', '.join(reserved)}")
        if len(set(names)) != len(names):
            raise ValueError("a header is given twice")
        return value


class HttpRequest(Tool[HttpRequestArgs]):
    name = "http_request"
    description = (
        "Send an HTTP request to an allowed internal service. It is queued and sent after "
        "this step is recorded; the result says it was queued, not what the service answered."
    )
    arguments = HttpRequestArgs

    def __init__(self, settings: OutboxSettings) -> None:
        self._policy = EgressPolicy(settings.http_allow_hosts)

    async def run(self, args: HttpRequestArgs, ctx: ToolContext) -> ToolResult:
        refusal = self._policy.refusal(args.url)
        if refusal is not None:
            return refused(EGRESS_DENIED, refusal)
        key = effect_key(ctx.run_id, ctx.step_number, 0)
        headers = dict(h.split(": ", 1) for h in args.headers)
        body: Any = None if args.body is None else json.loads(args.body)
        payload = {"method": args.method, "url": args.url, "headers": headers, "body": body}
        return ToolResult(
            data={
                "queued": True,
                "kind": "http",
                "method": args.method,
                "url": args.url,
                "idempotency_key": key,
            },
            effects=(OutboxEffect("http", payload),),
        )
