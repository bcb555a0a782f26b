"""The policy file: TOML text in, a validated `PolicyDocument` out, or an error naming lines.

Every problem is reported, each as `name:line: where: what` (the models file's format), so a
compliance officer fixes the file in one pass. Tool names must be tools this appliance has.
Nothing is stored here.
"""

from __future__ import annotations

import tomllib
from typing import Any, NoReturn

from pydantic import ValidationError

from agent.policy.document import PolicyDocument
from agent.policy.errors import InvalidPolicy
from agent.tools import TOOL_NAMES
from serving.toml_lines import Block, LineIndex, deployment_block

MAX_SOURCE_CHARS = 200_000


def parse_policy(source: str, *, name: str = "policy") -> PolicyDocument:
    if len(source) > MAX_SOURCE_CHARS:
        raise InvalidPolicy(f"{name}: larger than {MAX_SOURCE_CHARS} characters", 1)
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or _line_of(str(exc))
        message = str(exc).split(" (at ")[0]
        raise InvalidPolicy(f"{name}:{line}: invalid TOML: {message}", line) from None
    return _Checker(source, name).document(data)


def _line_of(message: str) -> int:
    marker = "(at line "
    if marker in message:
        digits = message.split(marker, 1)[1].split(",", 1)[0]
        if digits.isdigit():
            return int(digits)
    return 1


class _Checker:
    def __init__(self, source: str, name: str) -> None:
        self.lines = LineIndex(source, array_table="rules")
        self.name = name
        self.problems: list[tuple[int, str]] = []

    def document(self, data: dict[str, Any]) -> PolicyDocument:
        try:
            document = PolicyDocument.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors():
                self._problem(error["loc"], _message(error))
            self._fail()
        self._known_tools(document)
        if self.problems:
            self._fail()
        return document

    def _known_tools(self, document: PolicyDocument) -> None:
        known = ", ".join(sorted(TOOL_NAMES))
        if document.tools is not None:
            for key in ("allow", "deny"):
                for tool in getattr(document.tools, key) or ():
                    if tool not in TOOL_NAMES:
                        self._problem(("tools", key), f"unknown tool {tool!r} (known: {known})")
        for index, rule in enumerate(document.rules):
            for tool in rule.tools:
                if tool not in TOOL_NAMES:
                    self._problem(
                        ("rules", index, "tools"), f"unknown tool {tool!r} (known: {known})"
                    )

    def _problem(self, loc: tuple[int | str, ...], what: str) -> None:
        block, path = self._where(loc)
        line = self.lines.find(block, path)
        if line == 1 and block != ("root",) and path:
            # A table written inline (`tools = { deny = [...] }`) has no header of its own.
            line = self.lines.find(("root",), (block[0],))
        self.problems.append((line, f"{_label(loc)}: {what}"))

    @staticmethod
    def _where(loc: tuple[int | str, ...]) -> tuple[Block, tuple[str, ...]]:
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            path = tuple(str(p) for p in loc[2:] if isinstance(p, str))
            return deployment_block(loc[1]), path
        if len(loc) >= 2:
            return (str(loc[0]),), tuple(str(p) for p in loc[1:] if isinstance(p, str))
        return ("root",), tuple(str(p) for p in loc)

    def _fail(self) -> NoReturn:
        self.problems.sort(key=lambda p: p[0])
        text = "\n".join(f"{self.name}:{line}: {what}" for line, what in self.problems)
        raise InvalidPolicy(text, self.problems[0][0])


def _label(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "policy"


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required"
    return str(error["msg"]).removeprefix("Value error, ")
