"""The decision contract: schema shape and parsing of model answers, without I/O."""

from __future__ import annotations

import json

import pytest

from agent.decision import InvalidAction, action_schema, parse_action, parse_decision
from agent.outbox.settings import OutboxSettings
from agent.tools import build_tools

TOOLS = build_tools(OutboxSettings())


def test_schema_has_one_variant_per_tool_with_bounded_strings() -> None:
    schema = action_schema(list(TOOLS.values()))
    variants = schema["anyOf"]
    assert [v["properties"]["tool"]["const"] for v in variants] == [
        "search_documents",
        "finish",
        "send_email",
        "http_request",
    ]
    for v in variants:
        assert v["additionalProperties"] is False
        assert v["required"] == ["tool", "arguments"]
        for prop in v["properties"]["arguments"]["properties"].values():
            if prop.get("type") == "string":
                # Unbounded strings let guided decoding ramble past max_tokens (FACTS.md).
                assert "maxLength" in prop or "enum" in prop
            for option in prop.get("anyOf", []):  # an optional string is bounded as well
                if option.get("type") == "string":
                    assert "maxLength" in option


def test_single_tool_schema_is_the_variant_itself() -> None:
    schema = action_schema([TOOLS["finish"]])
    assert schema["properties"]["tool"] == {"const": "finish"}


def test_parse_valid_action_fills_defaults() -> None:
    action = parse_action('{"tool": "search_documents", "arguments": {"query": "leave"}}', TOOLS)
    assert action.tool == "search_documents"
    assert action.arguments == {"query": "leave", "k": 4, "tags": [], "where": []}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"tool": "rm_rf", "arguments": {}}', "must be one of"),
        ('{"tool": "finish", "arguments": {}}', "answer"),
        ('{"tool": "finish", "arguments": {"answer": ""}}', "answer"),
        ('{"tool": "finish", "arguments": {"answer": "x", "extra": 1}}', "extra"),
        ('{"tool": "finish", "arguments": {"answer": "x"}, "why": "?"}', "unexpected keys"),
        ('{"tool": "search_documents", "arguments": {"query": "q", "k": 99}}', "k"),
        (json.dumps({"tool": "finish", "arguments": {"answer": "x" * 2001}}), "answer"),
    ],
)
def test_parse_rejects_invalid_answers_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidAction) as err:
        parse_action(raw, TOOLS)
    assert reason in err.value.reason


def test_parse_refuses_a_tool_the_agent_is_not_allowed() -> None:
    only_finish = {"finish": TOOLS["finish"]}
    with pytest.raises(InvalidAction, match="must be one of: finish"):
        parse_action('{"tool": "search_documents", "arguments": {"query": "q"}}', only_finish)


def test_a_final_answer_at_its_longest_fits_the_decision_token_budget() -> None:
    """Guided decoding closes a bounded string at its maxLength, so the answer's bound must leave
    the whole JSON inside `decision_max_tokens`, or a rambling model is cut mid-JSON and the run
    fails. Rambling English ran at ~3.9 characters per token on the bundled model; 3.5 leaves a
    margin, and 64 tokens cover the JSON around the answer."""
    from agent.settings import AgentSettings

    finish = build_tools(OutboxSettings())["finish"]
    longest = finish.arguments_schema()["properties"]["answer"]["maxLength"]
    assert longest / 3.5 + 64 <= AgentSettings().decision_max_tokens


def email(to: str) -> dict[str, object]:
    return {"tool": "send_email", "arguments": {"to": [to], "subject": "s", "body": "b"}}


def test_parallel_schema_adds_a_bounded_list_of_calls_without_finish() -> None:
    assert action_schema(list(TOOLS.values()), 1) == action_schema(list(TOOLS.values()))
    schema = action_schema(list(TOOLS.values()), 3)
    batch = schema["anyOf"][-1]
    assert batch["required"] == ["calls"]
    assert batch["additionalProperties"] is False
    calls = batch["properties"]["calls"]
    assert (calls["minItems"], calls["maxItems"]) == (1, 3)
    names = [v["properties"]["tool"]["const"] for v in calls["items"]["anyOf"]]
    assert names == ["search_documents", "send_email", "http_request"]


def test_parse_decision_keeps_the_models_order() -> None:
    raw = json.dumps({"calls": [email("a@x.com"), email("b@x.com")]})
    actions = parse_decision(raw, TOOLS, parallel=2)
    assert [a.arguments["to"] for a in actions] == [["a@x.com"], ["b@x.com"]]
    assert [a.tool for a in parse_decision(json.dumps(email("a@x.com")), TOOLS, 2)] == [
        "send_email"
    ]


@pytest.mark.parametrize(
    ("answer", "parallel", "reason"),
    [
        ({"calls": [email("a@x.com")]}, 1, "answer with one call"),
        ({"calls": [email("a@x.com")] * 3}, 2, "list of 1 to 2 calls"),
        ({"calls": []}, 2, "list of 1 to 2 calls"),
        ({"calls": "all"}, 2, "list of 1 to 2 calls"),
        ({"calls": [email("a@x.com")], "why": 1}, 2, "unexpected keys"),
        (
            {"calls": [email("a@x.com"), {"tool": "finish", "arguments": {"answer": "x"}}]},
            2,
            "finish cannot be one of several",
        ),
        ({"calls": [email("a@x.com"), {"tool": "rm", "arguments": {}}]}, 2, "calls[1]: 'tool'"),
        ({"calls": [{"tool": "send_email", "arguments": {}}]}, 2, "calls[0]: invalid arguments"),
    ],
)
def test_parse_decision_rejects_bad_parallel_answers(
    answer: dict[str, object], parallel: int, reason: str
) -> None:
    with pytest.raises(InvalidAction) as err:
        parse_decision(json.dumps(answer), TOOLS, parallel)
    assert reason in err.value.reason
