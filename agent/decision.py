"""The decision layer's contract: the JSON schema the model must answer in, and its parser.

Pure functions, no I/O: given the allowed tools, `action_schema` is what guided decoding
constrains the model to, and `parse_action` turns the raw answer into a validated `Action` or
raises `InvalidAction` with a reason the loop can show the model on its retry.
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


def action_schema(tools: Sequence[Tool[Any]]) -> dict[str, Any]:
    """One object per tool: `{"tool": <const name>, "arguments": <the tool's argument schema>}`."""
    variants = [
        {
            "type": "object",
            "properties": {
                "tool": {"const": tool.name},
                "arguments": tool.arguments_schema(),
            },
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def parse_action(raw: str, tools: Mapping[str, Tool[Any]]) -> Action:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidAction(f"the answer is not JSON ({exc.msg} at position {exc.pos})") from exc
    if not isinstance(data, dict):
        raise InvalidAction("the answer must be a JSON object with 'tool' and 'arguments'")
    name = data.get("tool")
    if not isinstance(name, str) or name not in tools:
        allowed = ", ".join(sorted(tools))
        raise InvalidAction(f"'tool' must be one of: {allowed}; got {name!r}")
    extra = set(data) - {"tool", "arguments"}
    if extra:
        raise InvalidAction(f"unexpected keys: {', '.join(sorted(extra))}")
    try:
        args = tools[name].validate(data.get("arguments", {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidAction(f"invalid arguments for {name}: {problems}") from exc
    return Action(tool=name, args=args)
