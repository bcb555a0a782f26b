"""The policy file's content model: what a compliance officer writes, validated.

A policy is a TOML document (`agent.policy.file` reads it and points errors at their line):

    description = "Acme: nothing leaves without a reason"

    [tools]                     # allow = only these tools; deny = never these
    deny = ["http_request"]

    [egress]                    # http_request may reach only these hosts; this narrows
    allow_hosts = ["hooks.acme.internal"]   # GARRISON_HTTP_ALLOW_HOSTS, it never widens it

    [data]                      # search sees only documents carrying one of these tags
    search_tags = ["public", "support"]

    [approvals]                 # how long a pending approval waits before the run fails
    ttl_s = 3600

    [provenance]                # a recipient or host that came from documents or tool output
    when_untrusted = "require_approval"

    [[rules]]                   # deny or require approval when every condition holds
    name = "external-email"
    tools = ["send_email"]
    effect = "require_approval"
    reason = "email leaving acme.com needs a human"
    when = [{ arg = "to", part = "domain", not_in = ["acme.com"] }]

    [[rules]]                   # sql_query's SQL is judged by the views it reads
    name = "payroll"
    tools = ["sql_query"]
    effect = "require_approval"
    when = [{ arg = "sql", part = "view", in = ["payroll"] }]

Only shapes and values are checked here; what a rule does to an action is
`agent.policy.evaluators`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from agent.outbox.egress import parse_allowed_host

MAX_RULES = 200
MAX_LIST = 100
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
ToolName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Scalar = str | bool | int | float
ArgPath = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z0-9_-]{1,64}){0,8}$")
]
"""An argument name, then optionally keys inside it (`body.amount` reads the JSON text of
http_request's body)."""

OPERATORS = ("equals", "in", "not_in", "matches", "regex", "greater_than", "less_than", "untrusted")
Effect = Literal["deny", "require_approval"]
VIEW_TOOL = "sql_query"
"""The one tool whose argument a `view` condition reads: its `sql`."""
VIEW_OPERATORS = ("equals", "in", "not_in", "matches", "regex")


class Section(BaseModel):
    # A typo in a policy must be an error, never a rule silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Condition(Section):
    """One test on one argument. A list argument (send_email's `to`) matches when any of its
    items does; an argument the call does not have matches only `not_in`."""

    arg: ArgPath
    part: Literal["domain", "host", "view"] | None = None
    """Compare a part of the value: an email address's `domain`, a URL's `host` (lowercased),
    or each `view` an sql_query's `sql` reads, as the SQL guard parsed it."""
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in", max_length=MAX_LIST)
    not_in: list[Scalar] | None = Field(default=None, max_length=MAX_LIST)
    matches: str | None = Field(default=None, max_length=200)
    """A glob (`*.acme.com`), matched against the whole value."""
    regex: str | None = Field(default=None, max_length=200)
    """A regular expression, searched anywhere in the value."""
    greater_than: float | None = None
    less_than: float | None = None
    untrusted: Literal[True] | None = None
    """The value came from untrusted content (documents, records, tool output), not the task."""

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [op for op in OPERATORS if getattr(self, _attr(op)) is not None]
        if len(given) != 1:
            listed = ", ".join(OPERATORS)
            found = ", ".join(given) or "none"
            raise ValueError(f"give exactly one operator of: {listed} (found: {found})")
        if self.part == "view":
            if self.arg != "sql":
                raise ValueError('part = "view" reads sql_query\'s SQL: give arg = "sql"')
            if given[0] not in VIEW_OPERATORS:
                listed = ", ".join(VIEW_OPERATORS)
                raise ValueError(f'part = "view" compares view names: use one of {listed}')
        return self

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @property
    def operator(self) -> str:
        return next(op for op in OPERATORS if getattr(self, _attr(op)) is not None)

    @property
    def operand(self) -> Any:
        return getattr(self, _attr(self.operator))


def _attr(operator: str) -> str:
    return "in_" if operator == "in" else operator


class Rule(Section):
    name: Name
    """Recorded on every step it decides; unique within the file."""
    effect: Effect
    tools: list[ToolName] = Field(default_factory=list, max_length=MAX_LIST)
    """The tools it applies to; empty = every tool."""
    when: list[Condition] = Field(default_factory=list, max_length=20)
    """Conditions that must all hold; empty = every call of its tools."""
    reason: Text | None = None
    """What the model, the approver and the step record are told."""

    @model_validator(mode="after")
    def _views_of_sql_query(self) -> Rule:
        # Only sql_query's calls have views; for any other tool the condition could never be
        # evaluated, so a rule mixing them would be a rule that does not say what it does.
        if any(c.part == "view" for c in self.when) and self.tools != [VIEW_TOOL]:
            raise ValueError(f'a condition on part = "view" needs tools = ["{VIEW_TOOL}"]')
        return self


class Tools(Section):
    allow: list[ToolName] | None = Field(default=None, max_length=MAX_LIST)
    """Only these tools may be called (the agent's own list still applies); unset = any."""
    deny: list[ToolName] = Field(default_factory=list, max_length=MAX_LIST)

    # An agent that may not call finish can never answer: every run would burn its steps.
    @field_validator("allow")
    @classmethod
    def _allows_finish(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and "finish" not in value:
            raise ValueError("must include 'finish', or no run could ever answer")
        return value

    @field_validator("deny")
    @classmethod
    def _keeps_finish(cls, value: list[str]) -> list[str]:
        if "finish" in value:
            raise ValueError("'finish' must stay allowed, or no run could ever answer")
        return value


class Egress(Section):
    allow_hosts: list[str] = Field(max_length=MAX_LIST)
    """`host` or `host:port`, exact (no wildcards); empty = http_request may reach nothing."""

    @field_validator("allow_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_allowed_host(entry)  # a ValueError names the bad entry
        return value


class Data(Section):
    search_tags: list[Tag] = Field(min_length=1, max_length=20)
    """Searches (the tool's and the task's passages) see only documents with one of these."""


class Approvals(Section):
    ttl_s: int = Field(ge=1, le=30 * 24 * 3600)
    """A pending approval expires after this many seconds; the run then fails."""


class Provenance(Section):
    when_untrusted: Literal["allow", "require_approval", "deny"]
    """What happens to a send_email recipient or an http_request host that came from
    untrusted content rather than the task."""


class PolicyDocument(Section):
    description: Text | None = None
    tools: Tools | None = None
    egress: Egress | None = None
    data: Data | None = None
    approvals: Approvals | None = None
    provenance: Provenance | None = None
    rules: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}; names must be unique")
            seen.add(rule.name)
        return rules

    def as_json(self) -> dict[str, Any]:
        """Stored beside the source text; read back with `model_validate`."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
