"""Reading a condition's argument out of a proposed action, and testing it.

Pure functions over JSON. An argument path is an argument name, then keys inside it; a string
met on the way that holds JSON (http_request's `body`) is read as JSON, so `body.amount` works.
Lists fan out: `to` is every recipient, and a condition matches when any one of them does.
A `view` condition compares the views an sql_query reads, which the caller passes in: the SQL
guard's parse of the `sql` argument (`agent.policy.sql_views`), never a pattern over its text.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Collection, Sequence
from functools import cache
from typing import Any

import httpx

from agent.domain import JSON
from agent.policy.document import Condition


def values_at(arguments: JSON, path: str) -> list[Any]:
    """Every leaf value at `path` (lists fanned out); empty when the call has none there."""
    current: list[Any] = [arguments]
    for key in path.split("."):
        found: list[Any] = []
        for value in current:
            if isinstance(value, str):
                value = _json_text(value)
            if isinstance(value, dict) and key in value:
                found.append(value[key])
        current = _flatten(found)
    return [v for v in current if v is not None]


def _flatten(values: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for value in values:
        if isinstance(value, list):
            flat.extend(_flatten(value))
        else:
            flat.append(value)
    return flat


def _json_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def email_domain(value: str) -> str | None:
    local, at, domain = value.rpartition("@")
    return domain.lower().rstrip(".") if at and local and domain else None


def url_host(value: str) -> str | None:
    try:
        host = httpx.URL(value).host
    except (httpx.InvalidURL, TypeError):
        return None
    return host.lower().rstrip(".") or None


def part_of(value: Any, part: str | None) -> Any:
    if part is None:
        return value
    if not isinstance(value, str):
        return None
    return email_domain(value) if part == "domain" else url_host(value)


def holds(
    condition: Condition,
    arguments: JSON,
    untrusted: Collection[str],
    views: Sequence[str] | None = None,
) -> bool:
    """Whether `condition` holds for a call with `arguments`; `untrusted` names the argument
    paths provenance found to come from untrusted content, `views` the views the call's SQL
    reads (None: not known here)."""
    if condition.operator == "untrusted":
        return any(path == condition.arg or path.startswith(condition.arg + ".")
                   for path in untrusted)  # fmt: skip
    if condition.part == "view":
        if views is None:
            # Unknown views fail closed: the rule applies (it can only deny or ask a person).
            return True
        # A query that reads no view reads nothing a list could allow or forbid.
        return any(_test(condition.operator, condition.operand, v) for v in views)
    found = [part_of(v, condition.part) for v in values_at(arguments, condition.arg)]
    found = [v for v in found if v is not None]
    if not found:
        # Nothing to compare: only "not in the list" is true of a value that is not there (an
        # unreadable host is not an allowed host).
        return condition.operator == "not_in"
    operand = condition.operand
    if condition.part is not None and condition.operator in ("equals", "in", "not_in", "matches"):
        # Domains and hosts are compared lowercased on both sides, as DNS compares them.
        operand = _lowered(operand)
    return any(_test(condition.operator, operand, v) for v in found)


def _lowered(operand: Any) -> Any:
    if isinstance(operand, str):
        return operand.lower().rstrip(".")
    if isinstance(operand, list):
        return [_lowered(o) for o in operand]
    return operand


def _test(operator: str, operand: Any, value: Any) -> bool:
    match operator:
        case "equals":
            return _same(value, operand)
        case "in":
            return any(_same(value, o) for o in operand)
        case "not_in":
            return not any(_same(value, o) for o in operand)
        case "matches":
            return isinstance(value, str) and fnmatch.fnmatchcase(value, operand)
        case "regex":
            return isinstance(value, str) and _regex(operand).search(value) is not None
        case "greater_than" | "less_than":
            number = _number(value)
            if number is None:
                return False
            limit = float(operand)
            return number > limit if operator == "greater_than" else number < limit
    raise ValueError(f"unknown operator {operator!r}")


def _same(value: Any, operand: Any) -> bool:
    # JSON true is not 1, and "5" is not 5: policies compare what the model wrote.
    if isinstance(value, bool) or isinstance(operand, bool):
        return value is operand
    return bool(value == operand)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
