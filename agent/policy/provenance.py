"""Provenance: which arguments of a proposed action came from untrusted content.

Untrusted content is everything the run read rather than was told: the passages retrieved for
the task, and every earlier step's tool result (documents, records, service answers). Trusted
text is the task input and the agent's instructions. A value in the proposed arguments is
*tainted* when it appears verbatim (after normalising: NFKC, case-folded, whitespace collapsed)
in some untrusted content and nowhere in the trusted text. Besides whole values, an email
address's domain, a URL's host and its query values are checked on their own, so a model that
assembles `bob@attacker.example` or `https://attacker.example/?q=...` from pieces of a
document is still caught.

This is a heuristic with a known direction of error: a value the model paraphrased is not
caught, a value both the task and a document mention is trusted. Policies act on it through
`[provenance]` and `untrusted = true` conditions; the step records every taint and its sources.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from agent.domain import JSON, Step
from agent.policy.conditions import email_domain, url_host

MIN_CHARS = 5
"""Shorter values (`POST`, `1000`, `yes`) are everywhere; they say nothing about their origin."""
MAX_SOURCES = 5
MAX_VALUE_CHARS = 200


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass(frozen=True, slots=True)
class Taint:
    path: str
    """The argument, as policy conditions name it: `to`, `url`, `body.account`."""
    where: str
    """Exactly what was found, for people: `to[1]`, `url (host)`."""
    value: str
    sources: tuple[str, ...]
    """Where it appeared: `passage 3 (Vendor list)`, `step 2 (search_documents)`."""

    def as_json(self) -> JSON:
        return {
            "path": self.path,
            "where": self.where,
            "value": self.value[:MAX_VALUE_CHARS],
            "sources": list(self.sources),
        }


@dataclass(frozen=True, slots=True)
class _Source:
    label: str
    text: str


class Provenance:
    """The run's trusted text and the untrusted content it has read so far."""

    def __init__(self, trusted: str) -> None:
        self._trusted = normalise(trusted)
        self._sources: list[_Source] = []

    @classmethod
    def of_run(cls, task: str, instructions: str, history: Sequence[Step]) -> Provenance:
        provenance = cls(task + "\n" + instructions)
        for step in history:
            provenance.read(step)
        return provenance

    def read(self, step: Step) -> None:
        """Add what `step` brought into the run: step 1's passages, and its tool's result. A
        step whose action waited for a person brought nothing in: its result is the approval
        request the gate wrote (an id, the rule's reason), which is no content of the run's."""
        self._sources.extend(_passage_sources(step.context))
        if step.tool is not None and step.result and not _awaited(step):
            self._add(f"step {step.number} ({step.tool})", "\n".join(_strings(step.result)))

    def _add(self, label: str, text: str) -> None:
        normalised = normalise(text)
        if normalised:
            self._sources.append(_Source(label, normalised))

    def taints(self, arguments: JSON, shown: JSON | None = None) -> list[Taint]:
        """The tainted values of `arguments`. `shown` is the context of the step deciding on
        them: its passages are in the model's prompt now but enter the run (`read`) only when
        that step commits, and the first step's action must be traced to them too."""
        sources = self._sources
        if shown and shown.get("passages"):
            sources = [*sources, *_passage_sources(shown)]
        if not sources:
            return []
        found: list[Taint] = []
        for path, where, value in _candidates(arguments):
            needle = normalise(value)
            if len(needle) < MIN_CHARS or needle in self._trusted:
                continue
            sources_of = tuple(s.label for s in sources if needle in s.text)[:MAX_SOURCES]
            if sources_of:
                found.append(Taint(path, where, value, sources_of))
        return found

    def approved(self, arguments: JSON, recorded: Any) -> list[Taint]:
        """The taints of an approved action about to run: `arguments` traced again (an
        approver's edit may hold a value from untrusted content), and those `recorded` on its
        proposal that it still holds."""
        found = self.taints(arguments)
        seen = {(t.path, t.where) for t in found}
        return found + [t for t in still_held(recorded, arguments) if (t.path, t.where) not in seen]


def still_held(recorded: Any, arguments: JSON) -> list[Taint]:
    """The taints recorded on a step (`decision.provenance`) whose value `arguments` still hold
    at the same path: what an approver left of a proposal keeps the provenance it had."""
    held = {(path, normalise(value)) for path, _where, value in _candidates(arguments)}
    kept: list[Taint] = []
    for taint in recorded if isinstance(recorded, list) else []:
        if not isinstance(taint, dict):
            continue
        path, value = str(taint.get("path", "")), str(taint.get("value", ""))
        if (path, normalise(value)) in held:
            sources = tuple(str(s) for s in taint.get("sources") or ())
            kept.append(Taint(path, str(taint.get("where", path)), value, sources))
    return kept


def _awaited(step: Step) -> bool:
    return "approval" in step.decision and "resumed_step" not in step.decision


def _passage_sources(context: JSON) -> Iterator[_Source]:
    """The passages a step's context recorded (its prompt showed them), as sources."""
    for passage in context.get("passages", []) or []:
        text = normalise(str(passage.get("content", "")))
        if text:
            yield _Source(f"passage {passage.get('chunk_id')} ({passage.get('title', '')})", text)


def _strings(value: Any) -> Iterator[str]:
    """Every string and number in a JSON value (keys are the tool's, not the content's)."""
    if isinstance(value, dict):
        for inner in value.values():
            yield from _strings(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _strings(inner)
    elif isinstance(value, str):
        yield value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)


def _candidates(arguments: JSON) -> Iterator[tuple[str, str, str]]:
    """(policy path, display path, value) for every value worth tracing, pieces included."""
    for name, value in arguments.items():
        yield from _walk(name, name, value)


def _walk(path: str, where: str, value: Any) -> Iterator[tuple[str, str, str]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _walk(f"{path}.{key}", f"{where}.{key}", inner)
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _walk(path, f"{where}[{i}]", inner)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, where, str(value)
    elif isinstance(value, str):
        yield path, where, value
        yield from _pieces(path, where, value)


def _pieces(path: str, where: str, value: str) -> Iterator[tuple[str, str, str]]:
    stripped = value.strip()
    if stripped[:1] in ("{", "["):
        try:
            inner = json.loads(stripped)
        except ValueError:
            inner = None
        if isinstance(inner, dict | list):
            yield from _walk(path, where, inner)
            return
    if "@" in value and " " not in stripped:
        domain = email_domain(stripped)
        if domain:
            yield path, f"{where} (domain)", domain
        return
    if stripped.startswith(("http://", "https://")):
        host = url_host(stripped)
        if host:
            yield path, f"{where} (host)", host
        try:
            params = httpx.URL(stripped).params
        except (httpx.InvalidURL, TypeError):
            return
        for key, param in params.multi_items():
            yield path, f"{where} (query {key})", param
