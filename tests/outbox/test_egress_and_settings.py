"""The allow-list and the outbox settings, without I/O: what may be called, what refuses to load."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import ValidationError

from agent.decision import InvalidAction, parse_action
from agent.outbox.egress import AllowedHost, EgressPolicy, parse_allowed_host
from agent.outbox.email import message_id
from agent.outbox.settings import OutboxSettings
from agent.tools import build_tools
from agent.tools.base import ToolContext
from agent.tools.http_request import HttpRequest, HttpRequestArgs

POLICY = EgressPolicy(["hooks.corp.example", "10.1.2.3:8443", "[::1]:9000", "CI.Corp.Example."])


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.corp.example/x",
        "http://hooks.corp.example:8080/x?y=1",
        "https://HOOKS.corp.example./x",
        "https://10.1.2.3:8443/api",
        "http://[::1]:9000/",
        "https://ci.corp.example/build",
    ],
)
def test_allowed_urls(url: str) -> None:
    assert POLICY.refusal(url) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://evil.example/x", "not on the allow-list"),
        ("https://hooks.corp.example.evil.example/", "not on the allow-list"),
        ("https://10.1.2.3/api", "10.1.2.3:443 is not on the allow-list"),
        ("http://[::1]:9001/", "not on the allow-list"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("gopher://hooks.corp.example/", "scheme 'gopher'"),
        ("https://u:p@hooks.corp.example/", "credentials"),
        ("https://u@hooks.corp.example/", "credentials"),
        ("https://hooks.corp.example\\@evil.example/", "backslashes"),
        ("https://hooks.corp.example /", "whitespace"),
        ("https://hooks.corp.example\n.evil/", "control characters"),
        ("//hooks.corp.example/x", "scheme"),
        ("https:///x", "no valid host"),
    ],
)
def test_refused_urls(url: str, reason: str) -> None:
    refusal = POLICY.refusal(url)
    assert refusal is not None
    assert reason in refusal


def test_an_empty_allow_list_refuses_everything_and_says_so() -> None:
    assert EgressPolicy([]).refusal("http://127.0.0.1/") == (
        "no host is allowed (GARRISON_HTTP_ALLOW_HOSTS is empty)"
    )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("Example.ORG", AllowedHost("example.org", None)),
        ("example.org:8080", AllowedHost("example.org", 8080)),
        ("[::1]:80", AllowedHost("::1", 80)),
        ("::1", AllowedHost("::1", None)),
        ("127.0.0.1", AllowedHost("127.0.0.1", None)),
    ],
)
def test_allow_list_entries(entry: str, expected: AllowedHost) -> None:
    assert parse_allowed_host(entry) == expected


@pytest.mark.parametrize(
    "entry", ["*", "*.corp.example", "http://x.example", "x.example/path", "x.example:0", "a:b:c]"]
)
def test_bad_allow_list_entries_refuse_to_load(entry: str) -> None:
    with pytest.raises(ValidationError):
        OutboxSettings(http_allow_hosts=[entry])


def test_the_allow_list_is_comma_separated_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GARRISON_HTTP_ALLOW_HOSTS", "a.example, b.example:8080,")
    assert OutboxSettings().http_allow_hosts == ["a.example", "b.example:8080"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"smtp_host": "relay.example"}, "required when GARRISON_SMTP_HOST is set"),
        ({"smtp_username": "u"}, "go together"),
        (
            {
                "smtp_host": "relay.example",
                "smtp_from": "a@b.example",
                "smtp_username": "u",
                "smtp_password": "p",
            },
            "need GARRISON_SMTP_STARTTLS=true",
        ),
        ({"outbox_lease_seconds": 10, "outbox_delivery_timeout_s": 6}, "at least twice"),
        (
            {"outbox_backoff_base_s": 5, "outbox_backoff_cap_s": 1},
            "at least GARRISON_OUTBOX_BACKOFF_BASE_S",
        ),
    ],
)
def test_unsafe_or_incoherent_settings_refuse_to_load(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        OutboxSettings(**values)  # type: ignore[arg-type]


def test_credentials_are_fine_over_starttls_or_to_a_loopback_relay() -> None:
    common = {"smtp_from": "a@b.example", "smtp_username": "u", "smtp_password": "p"}
    assert OutboxSettings(smtp_host="relay.example", smtp_starttls=True, **common).email_configured
    assert OutboxSettings(smtp_host="127.0.0.1", **common).email_configured
    assert not OutboxSettings().email_configured


def test_message_ids_are_deterministic_per_key() -> None:
    key = f"{uuid.uuid4()}:3:0"
    assert message_id(key, "a@corp.example") == message_id(key, "a@corp.example")
    assert message_id(key, "a@corp.example").endswith("@corp.example>")
    assert message_id(key, "a@corp.example") != message_id(key[:-1] + "1", "a@corp.example")


TOOLS = build_tools(OutboxSettings(http_allow_hosts=["hooks.corp.example"]))


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"to": [], "subject": "s", "body": "b"}, "to"),
        ({"to": ["a@b.example"] * 11, "subject": "s", "body": "b"}, "to"),
        ({"to": ["not-an-address"], "subject": "s", "body": "b"}, "to.0"),
        ({"to": ["a@b.example\nBcc: x@y.example"], "subject": "s", "body": "b"}, "to.0"),
        ({"to": ["a@b.example"], "subject": "s\r\nBcc: x@y.example", "body": "b"}, "subject"),
        ({"to": ["a@b.example"], "subject": "s" * 201, "body": "b"}, "subject"),
        ({"to": ["a@b.example"], "subject": "s", "body": "b" * 2001}, "body"),
    ],
)
def test_send_email_arguments_are_bounded_and_header_safe(
    arguments: dict[str, object], problem: str
) -> None:
    raw = {"tool": "send_email", "arguments": arguments}
    with pytest.raises(InvalidAction, match=f"{problem}: "):
        parse_action(json.dumps(raw), TOOLS)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"method": "TRACE", "url": "https://hooks.corp.example/"}, "method"),
        ({"method": "POST", "url": "https://hooks.corp.example/", "body": "{not json"}, "body"),
        (
            {"method": "POST", "url": "https://hooks.corp.example/", "headers": ["Host: evil"]},
            "set by Garrison",
        ),
        (
            {"method": "POST", "url": "https://hooks.corp.example/", "headers": ["X-A: 1\r\nX: 2"]},
            "headers.0",
        ),
        (
            {"method": "POST", "url": "https://hooks.corp.example/", "headers": ["X-A: 1"] * 9},
            "headers",
        ),
        ({"method": "POST", "url": "https://hooks.corp.example/" + "a" * 2000}, "url"),
    ],
)
def test_http_request_arguments_are_bounded(arguments: dict[str, object], problem: str) -> None:
    raw = {"tool": "http_request", "arguments": arguments}
    with pytest.raises(InvalidAction, match=problem):
        parse_action(json.dumps(raw), TOOLS)


async def test_http_request_queues_the_parsed_body_and_headers() -> None:
    tool = TOOLS["http_request"]
    assert isinstance(tool, HttpRequest)
    run_id = uuid.uuid4()
    ctx = ToolContext(
        tenant_id=uuid.uuid4(),
        run_id=run_id,
        step_number=4,
        documents=None,  # type: ignore[arg-type]
        embedder=None,  # type: ignore[arg-type]
    )
    args = HttpRequestArgs(
        method="PUT",
        url="https://hooks.corp.example/t/1",
        body='{"a": [1, 2]}',
        headers=["X-Team: ops"],
    )
    result = await tool.run(args, ctx)
    assert result.data["idempotency_key"] == f"{run_id}:4:0"
    [effect] = result.effects
    assert effect.kind == "http"
    assert effect.payload == {
        "method": "PUT",
        "url": "https://hooks.corp.example/t/1",
        "headers": {"X-Team": "ops"},
        "body": {"a": [1, 2]},
    }
