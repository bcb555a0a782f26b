"""`policies test --against-runs`: what a draft policy would have decided about recorded steps.

Each recorded step whose model proposed an action is judged again, in order, under the draft
(in place of the scope it is drafted for, beside the other scope's active policy), with
provenance rebuilt from the run's own earlier steps exactly as the loop saw them, and the views
an sql_query read taken from its result. The verdict
recorded on the step (allow when no policy judged it) is compared with the draft's; nothing is
executed or written. Steps that carried out an approved action are not model decisions and are
skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from agent.domain import JSON, AgentDefinition, PolicyRecord, Run, Step
from agent.policy.compiled import CompiledPolicy, EffectivePolicy, compiled
from agent.policy.evaluators import EvaluationContext, ProposedAction
from agent.policy.provenance import Provenance
from agent.policy.verdicts import Allow, verdict_record


@dataclass(frozen=True, slots=True)
class VerdictChange:
    run_id: uuid.UUID
    step: int
    tool: str
    arguments: JSON
    recorded: JSON
    """The step's `decision.policy` (verdict, rule, reason, version), or an implicit allow."""
    draft: JSON


@dataclass(frozen=True, slots=True)
class WhatIf:
    runs: int
    steps: int
    """Model decisions judged again."""
    changes: list[VerdictChange]


ActiveOf = Callable[[uuid.UUID, str], Awaitable[list[PolicyRecord]]]
StepsOf = Callable[[uuid.UUID], Awaitable[list[Step]]]
AgentOf = Callable[[uuid.UUID], Awaitable[AgentDefinition | None]]


async def what_if(
    draft: CompiledPolicy,
    draft_agent: str | None,
    runs: Sequence[Run],
    *,
    steps_of: StepsOf,
    active_of: ActiveOf,
    agent_of: AgentOf,
) -> WhatIf:
    """Judge `runs`' recorded decisions under `draft`, drafted for the tenant (`draft_agent`
    None) or for one agent (only that agent's runs are judged)."""
    judged = 0
    changes: list[VerdictChange] = []
    considered = [r for r in runs if draft_agent is None or r.agent_name == draft_agent]
    for run in considered:
        policy = _with_draft(draft, draft_agent, await active_of(run.tenant_id, run.agent_name))
        agent = await agent_of(run.agent_id)
        provenance = Provenance(run.input + "\n" + (agent.instructions if agent else ""))
        for step in await steps_of(run.id):
            action = step.decision.get("action")
            if isinstance(action, dict) and "resumed_step" not in step.decision:
                judged += 1
                arguments = action.get("arguments") or {}
                taints = provenance.taints(arguments, shown=step.context)
                ctx = EvaluationContext(
                    untrusted=frozenset(t.path for t in taints), views=_views_read(step)
                )
                verdict = policy.evaluate(ProposedAction(str(action.get("tool")), arguments), ctx)
                recorded = step.decision.get("policy") or verdict_record(Allow(), None)
                now = verdict_record(verdict, policy.version)
                if (recorded.get("verdict"), recorded.get("rule")) != (verdict.kind, verdict.rule):
                    changes.append(
                        VerdictChange(run.id, step.number, str(action.get("tool")), arguments,
                                      recorded, now)
                    )  # fmt: skip
            provenance.read(step)
    return WhatIf(len(considered), judged, changes)


def _views_read(step: Step) -> tuple[str, ...] | None:
    """The views a recorded sql_query read, as its result says (None when it did not run:
    `view` conditions then fail closed, as they do wherever the views are not known)."""
    views = (step.result or {}).get("views") if step.tool == "sql_query" else None
    return tuple(str(v) for v in views) if isinstance(views, list) else None


def _with_draft(
    draft: CompiledPolicy, draft_agent: str | None, active: list[PolicyRecord]
) -> EffectivePolicy:
    """The draft in its scope's place, beside the other scope's active version (if any)."""
    other = next((r for r in active if (r.agent_name is None) != (draft_agent is None)), None)
    if draft_agent is None:  # a tenant draft, beside the agent's own policy
        parts = [draft, *([compiled(other)] if other else [])]
        version: JSON = {"tenant": "draft", "agent": other.version if other else None}
    else:  # an agent draft, on top of the tenant's policy
        parts = [*([compiled(other)] if other else []), draft]
        version = {"tenant": other.version if other else None, "agent": "draft"}
    return EffectivePolicy(tuple(parts), version)
