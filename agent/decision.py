"""The decision layer's contract: the JSON schema the model must answer in, and its parser.

Pure functions, no I/O: given the allowed tools, `action_schema` is what guided decoding
constrains the model to, and `parse_decision` turns the raw answer into validated `Action`s or
raises `InvalidAction` with a reason the loop can show the model on its retry.

An agent allowed parallel calls (`AgentDefinition.parallel_calls` > 1) may also answer
`{"calls": [{"tool": ..., "arguments": ...}, ...]}`: several calls decided at once, which the loop
judges and runs one by one and records as consecutive steps (so several of them can wait for
approval side by side). `finish` is never one of them: ending the run is a decision of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from agent.domain import JSON
from agent.tools import Tool
from agent.tools.base import ToolArguments


@dataclass(frozen=True, slots=True)
class Action:
    tool: str
    args: ToolArguments
    """Validated by the tool's argument model, defaults filled in."""

    @property
    def arguments(self) -> JSON:
        return self.args.model_dump(mode="json")


class InvalidAction(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


FINISH = "finish"
"""The tool that ends a run; never part of a parallel answer."""


def _call_schema(tool: Tool[Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "tool": {"const": tool.name},
            "arguments": tool.arguments_schema(),
        },
        "required": ["tool", "arguments"],
        "additionalProperties": False,
    }


def action_schema(tools: Sequence[Tool[Any]], parallel: int = 1) -> dict[str, Any]:
    """One object per tool: `{"tool": <const name>, "arguments": <the tool's argument schema>}`;
    with `parallel` > 1, also `{"calls": [...]}` of up to `parallel` such objects (not finish)."""
    variants = [_call_schema(tool) for tool in tools]
    batchable = [v for v, tool in zip(variants, tools, strict=True) if tool.name != FINISH]
    if parallel > 1 and batchable:
        items = batchable[0] if len(batchable) == 1 else {"anyOf": batchable}
        variants.append(
            {
                "type": "object",
                "properties": {
                    "calls": {
                        "type": "array",
                        "items": items,
                        "minItems": 1,
                        "maxItems": parallel,
                    }
                },
                "required": ["calls"],
                "additionalProperties": False,
            }
        )
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def parse_action(raw: str, tools: Mapping[str, Tool[Any]]) -> Action:
    """The one action of a single-call answer."""
    [action] = parse_decision(raw, tools, parallel=1)
    return action


def parse_decision(raw: str, tools: Mapping[str, Tool[Any]], parallel: int = 1) -> list[Action]:
    """The answer's actions, in the order the model gave them: one, or up to `parallel`."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidAction(f"the answer is not JSON ({exc.msg} at position {exc.pos})") from exc
    if isinstance(data, dict) and "calls" in data:
        return _parse_calls(data, tools, parallel)
    return [_parse_call(data, tools, "")]


def _parse_calls(
    data: dict[str, Any], tools: Mapping[str, Tool[Any]], parallel: int
) -> list[Action]:
    if parallel <= 1:
        raise InvalidAction('answer with one call: {"tool": ..., "arguments": ...}')
    extra = set(data) - {"calls"}
    if extra:
        raise InvalidAction(f"unexpected keys: {', '.join(sorted(extra))}")
    calls = data["calls"]
    if not isinstance(calls, list) or not 1 <= len(calls) <= parallel:
        raise InvalidAction(f"'calls' must be a list of 1 to {parallel} calls")
    actions = [_parse_call(call, tools, f"calls[{n}]: ") for n, call in enumerate(calls)]
    if any(a.tool == FINISH for a in actions):
        raise InvalidAction(f"{FINISH} cannot be one of several calls; answer it on its own")
    return actions


def _parse_call(data: Any, tools: Mapping[str, Tool[Any]], where: str) -> Action:
    if not isinstance(data, dict):
        raise InvalidAction(f"{where}the answer must be a JSON object with 'tool' and 'arguments'")
    name = data.get("tool")
    if not isinstance(name, str) or name not in tools:
        allowed = ", ".join(sorted(tools))
        raise InvalidAction(f"{where}'tool' must be one of: {allowed}; got {name!r}")
    extra = set(data) - {"tool", "arguments"}
    if extra:
        raise InvalidAction(f"{where}unexpected keys: {', '.join(sorted(extra))}")
    try:
        args = tools[name].validate(data.get("arguments", {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidAction(f"{where}invalid arguments for {name}: {problems}") from exc
    return Action(tool=name, args=args)
