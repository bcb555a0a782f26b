"""From stored policy versions to what governs one run.

`compile_document` turns a validated document into an evaluator chain, in file order: tool
lists, egress, each `[[rules]]` entry, provenance. `EffectivePolicy` puts a tenant's policy and
its agent's together: both chains are evaluated (tenant first) and the strongest verdict wins,
data scopes intersect and the shorter approval expiry applies, so an agent policy can only
tighten the tenant's. Compiled documents are cached by their stored id (a stored version never
changes), so a worker validates each version once, not once per run.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from agent.domain import JSON, PolicyRecord
from agent.policy.document import PolicyDocument
from agent.policy.evaluators import (
    ArgumentRule,
    Chain,
    EgressAllowList,
    EvaluationContext,
    Evaluator,
    ProposedAction,
    ToolAllowList,
    ToolDenyList,
    UntrustedTarget,
)
from agent.policy.verdicts import ALLOW, Verdict, strongest

_CACHE_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    chain: Chain
    search_tags: frozenset[str] | None
    """Documents search may return must carry one of these; None = no restriction."""
    ttl_s: int | None
    untrusted_rules: bool
    """Whether any rule reads provenance (a `[provenance]` table or `untrusted` condition)."""
    view_rules: bool = False
    """Whether any rule reads the views of an sql_query (a `part = "view"` condition)."""


def compile_document(document: PolicyDocument) -> CompiledPolicy:
    evaluators: list[Evaluator] = []
    if document.tools is not None:
        if document.tools.allow is not None:
            evaluators.append(ToolAllowList(frozenset(document.tools.allow)))
        if document.tools.deny:
            evaluators.append(ToolDenyList(frozenset(document.tools.deny)))
    if document.egress is not None:
        evaluators.append(EgressAllowList(tuple(document.egress.allow_hosts)))
    evaluators.extend(ArgumentRule(rule) for rule in document.rules)
    if document.provenance is not None:
        evaluators.append(UntrustedTarget(document.provenance.when_untrusted))
    untrusted = document.provenance is not None or any(
        c.operator == "untrusted" for rule in document.rules for c in rule.when
    )
    return CompiledPolicy(
        chain=Chain(tuple(evaluators)),
        search_tags=frozenset(document.data.search_tags) if document.data else None,
        ttl_s=document.approvals.ttl_s if document.approvals else None,
        untrusted_rules=untrusted,
        view_rules=any(c.part == "view" for rule in document.rules for c in rule.when),
    )


_compiled: dict[tuple[uuid.UUID, int, str], CompiledPolicy] = {}


def compiled(record: PolicyRecord) -> CompiledPolicy:
    # Keyed by content as well as id: a process may meet two databases (tests, a restore).
    key = (record.tenant_id, record.id, record.sha256)
    policy = _compiled.get(key)
    if policy is None:
        policy = compile_document(PolicyDocument.model_validate(record.document))
        if len(_compiled) >= _CACHE_LIMIT:
            _compiled.clear()
        _compiled[key] = policy
    return policy


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """The tenant-wide policy and the agent's own, as one."""

    parts: tuple[CompiledPolicy, ...]
    version: JSON | None
    """`{"tenant": 3, "agent": 1}` (a missing scope is null); None when there is no policy."""

    @classmethod
    def of(cls, records: Sequence[PolicyRecord]) -> EffectivePolicy:
        """From the active version of each scope (at most one tenant-wide, one for the agent)."""
        if not records:
            return NO_POLICY
        ordered = sorted(records, key=lambda r: r.agent_name is not None)  # tenant first
        version: JSON = {"tenant": None, "agent": None}
        for record in ordered:
            version["agent" if record.agent_name is not None else "tenant"] = record.version
        return cls(tuple(compiled(r) for r in ordered), version)

    @property
    def active(self) -> bool:
        return bool(self.parts)

    @property
    def reads_provenance(self) -> bool:
        return any(p.untrusted_rules for p in self.parts)

    @property
    def reads_views(self) -> bool:
        return any(p.view_rules for p in self.parts)

    def evaluate(self, action: ProposedAction, ctx: EvaluationContext) -> Verdict:
        if not self.parts:
            return ALLOW
        return strongest(p.chain.evaluate(action, ctx) for p in self.parts)

    @property
    def search_tags(self) -> tuple[str, ...]:
        """The tags a search must match one of; empty = unrestricted. Scopes intersect; two
        that share nothing leave a tag no document has, so nothing is found."""
        scopes = [p.search_tags for p in self.parts if p.search_tags is not None]
        if not scopes:
            return ()
        common = frozenset.intersection(*scopes)
        return tuple(sorted(common)) if common else (NO_DOCUMENT_TAG,)

    def ttl_s(self, default: float) -> float:
        ttls = [p.ttl_s for p in self.parts if p.ttl_s is not None]
        return float(min(ttls)) if ttls else default


NO_POLICY = EffectivePolicy((), None)
NO_DOCUMENT_TAG = "\x1fgarrison:no-scope"
"""A tag no document can carry: ingestion strips tags, and str.strip() removes a leading \x1f."""
