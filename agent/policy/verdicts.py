"""What a policy says about one proposed action, and how several such answers combine.

A verdict is a frozen value, never a flag: `Allow`, `Deny(rule, reason)` or
`RequireApproval(rule, reason)`. Evaluators return one each; `strongest` folds them with a fixed
precedence — any deny beats any approval requirement, which beats allow — and within one kind
the first in evaluation order wins, so the rule a step records is the first one that decided it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from agent.domain import JSON


@dataclass(frozen=True, slots=True)
class Allow:
    kind: ClassVar[str] = "allow"
    rank: ClassVar[int] = 0
    rule: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Deny:
    kind: ClassVar[str] = "deny"
    rank: ClassVar[int] = 2
    rule: str
    """The rule that decided it, as named in the policy file (`tools.deny`, a rule's name...)."""
    reason: str
    """Said to the model and recorded on the step."""


@dataclass(frozen=True, slots=True)
class RequireApproval:
    kind: ClassVar[str] = "require_approval"
    rank: ClassVar[int] = 1
    rule: str
    reason: str


Verdict = Allow | Deny | RequireApproval
ALLOW = Allow()
VERDICT_KINDS = (Allow.kind, RequireApproval.kind, Deny.kind)
"""Every verdict kind, weakest first."""


def strongest(verdicts: Iterable[Verdict]) -> Verdict:
    """Deny over require-approval over allow; the first of the strongest kind wins."""
    best: Verdict = ALLOW
    for verdict in verdicts:
        if verdict.rank > best.rank:
            best = verdict
            if best.rank == Deny.rank:
                break  # nothing outranks the first deny
    return best


def verdict_record(verdict: Verdict, version: JSON | None) -> JSON:
    """How a verdict is recorded on a step (`decision.policy`) and compared by `policies test`."""
    return {
        "verdict": verdict.kind,
        "rule": verdict.rule,
        "reason": verdict.reason,
        "version": version,
    }
