"""Policy evaluators: small objects that each judge a proposed action by one kind of rule.

Every evaluator has one method, `evaluate(action, ctx) -> Verdict`, and knows nothing of the
others; a `Chain` runs them in order and keeps the strongest verdict (`verdicts.strongest`: the
first deny, else the first approval requirement, else allow). Compiling a policy document into
a chain is `agent.policy.compiled`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agent.domain import JSON
from agent.outbox.egress import EgressPolicy
from agent.policy.conditions import holds
from agent.policy.document import Rule
from agent.policy.verdicts import ALLOW, Deny, RequireApproval, Verdict, strongest

TARGETS: dict[str, str] = {"send_email": "to", "http_request": "url"}
"""Where each side-effecting tool says where its effect goes: recipients, and the host."""


@dataclass(frozen=True, slots=True)
class ProposedAction:
    tool: str
    arguments: JSON


@dataclass(frozen=True, slots=True)
class EvaluationContext:
    untrusted: frozenset[str] = frozenset()
    """Argument paths whose values came from untrusted content (`agent.policy.provenance`)."""
    views: tuple[str, ...] | None = None
    """The views an sql_query reads, as the SQL guard parsed them (`agent.policy.sql_views`);
    None when not known, and `view` conditions then hold (they fail closed)."""


NO_CONTEXT = EvaluationContext()


class Evaluator(Protocol):
    def evaluate(self, action: ProposedAction, ctx: EvaluationContext) -> Verdict: ...


@dataclass(frozen=True, slots=True)
class ToolAllowList:
    allowed: frozenset[str]
    rule: str = "tools.allow"

    def evaluate(self, action: ProposedAction, ctx: EvaluationContext) -> Verdict:
        if action.tool in self.allowed:
            return ALLOW
        return Deny(self.rule, f"the policy does not allow the tool {action.tool}")


@dataclass(frozen=True, slots=True)
class ToolDenyList:
    denied: frozenset[str]
    rule: str = "tools.deny"

    def evaluate(self, action: ProposedAction, ctx: EvaluationContext) -> Verdict:
        if action.tool in self.denied:
            return Deny(self.rule, f"the policy denies the tool {action.tool}")
        return ALLOW


@dataclass(frozen=True, slots=True)
class EgressAllowList:
    """http_request may reach only these hosts. The appliance-wide allow-list is checked by
    the tool and the dispatcher as well, so a policy can narrow it and never widen it."""

    hosts: tuple[str, ...]
    rule: str = "egress.allow_hosts"
    _policy: EgressPolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_policy", EgressPolicy(self.hosts))

    def evaluate(self, action: ProposedAction, ctx: EvaluationContext) -> Verdict:
        url = action.arguments.get("url")
        if action.tool != "http_request" or not isinstance(url, str):
            return ALLOW
        refusal = self._policy.refusal(url)
        if refusal is None:
            return ALLOW
        # The egress module words its refusals for the appliance-wide list; say whose it is.
        reason = refusal.replace("GARRISON_HTTP_ALLOW_HOSTS", "the tenant's policy")
        return Deny(self.rule, reason)


@dataclass(frozen=True, slots=True)
class ArgumentRule:
    """A `[[rules]]` entry: deny or require approval when every condition holds."""

    rule: Rule

    def evaluate(self, action: ProposedAction, ctx: EvaluationContext) -> Verdict:
        rule = self.rule
        if rule.tools and action.tool not in rule.tools:
            return ALLOW
        if not all(holds(c, action.arguments, ctx.untrusted, ctx.views) for c in rule.when):
            return ALLOW
        reason = rule.reason or f"the policy rule {rule.name} applies to this call"
        if rule.effect == "deny":
            return Deny(rule.name, reason)
        return RequireApproval(rule.name, reason)


@dataclass(frozen=True, slots=True)
class UntrustedTarget:
    """`[provenance] when_untrusted`: a side effect whose recipient or host came from
    untrusted content is denied or waits for a person."""

    effect: str
    rule: str = "provenance.when_untrusted"

    def evaluate(self, action: ProposedAction, ctx: EvaluationContext) -> Verdict:
        target = TARGETS.get(action.tool)
        if target is None or self.effect == "allow" or target not in ctx.untrusted:
            return ALLOW
        reason = (
            f"the {target} of this {action.tool} came from documents or tool output, "
            "not from the task"
        )
        if self.effect == "deny":
            return Deny(self.rule, reason)
        return RequireApproval(self.rule, reason)


@dataclass(frozen=True, slots=True)
class Chain:
    evaluators: Sequence[Evaluator]

    def evaluate(self, action: ProposedAction, ctx: EvaluationContext) -> Verdict:
        return strongest(e.evaluate(action, ctx) for e in self.evaluators)
