"""The run loop's view of governed actions: one `RunGate` per driven run.

`Governance.open` is called once when a worker starts driving a run: it reads the run's
policies (one query, the newest version of the tenant's and the agent's), rebuilds provenance
from the steps already taken, and, when the run comes back from an approval, reads that
approval. Nothing else touches the database per step: `rule` is pure, so a run without a
policy pays for a dictionary lookup, and a policy changed mid-run applies from the run's next
claim (for example after an approval).

`rule(action, history)` judges a proposed action: allowed, it runs; denied, it does not run and
the step's result tells the model why (the run fails `policy_denied` after
`policy_max_denials` refusals); needing approval, the step records the proposed action and an
approval request, and its commit parks the run (`awaiting_approval`) and inserts the approval
in the same statement. A turn of parallel calls may park several actions at once: one approval
each, decided independently; the run waits until every one is decided. `resume` is the step
after a decision: the approved (maybe edited) action, checked once more against the policy (with
its provenance traced again, and, for an sql_query, its views), or the approver's refusal for the
model. An action the agent may no longer call, or whose arguments no longer validate, is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from agent import codes
from agent.decision import Action
from agent.domain import (
    JSON,
    AgentDefinition,
    Approval,
    ApprovalStatus,
    OutboxEffect,
    Run,
    RunOutcome,
    RunStatus,
    Step,
)
from agent.policy import sql_views, step_audit
from agent.policy.compiled import NO_POLICY, EffectivePolicy
from agent.policy.evaluators import EvaluationContext, ProposedAction
from agent.policy.provenance import Provenance, Taint
from agent.policy.settings import GovernanceSettings
from agent.policy.verdicts import Allow, Deny, RequireApproval, Verdict, verdict_record
from agent.ports import ApprovalStore, AuditLog, PolicyStore, SqlCatalog, TenantSql
from agent.sqlguard import Rejected, SqlChecks
from agent.tools import Tool
from agent.tools.sql_query import refusal as sql_refusal

GOES_ON = RunOutcome()
"""The run goes on: the outcome of a step that neither ends nor parks it."""


@dataclass(frozen=True, slots=True)
class Ruling:
    """What the gate makes of one proposed action."""

    notes: JSON
    """Added to the step's `decision`: `policy` (verdict, rule, reason, version), `provenance`
    (tainted arguments), `approval` (the request, or the decision a resumed step carries)."""
    action: Action | None
    """What runs now; None when nothing does (denied, parked, refused by an approver)."""
    result: JSON | None = None
    """The step's result when nothing runs: what the model is told."""
    outcome: RunOutcome = GOES_ON


def refusal(code: str, message: str) -> JSON:
    return {"error": {"code": code, "message": message}}


def is_gated(step: Step) -> bool:
    """Whether `step` proposed an action that waits for (or waited for) a person."""
    approval = step.decision.get("approval")
    return (
        isinstance(approval, dict)
        and "resumed_step" not in step.decision
        and (step.decision.get("policy", {}).get("verdict") == RequireApproval.kind)
    )


def last_turn(history: Sequence[Step]) -> list[Step]:
    """The steps of the run's last turn: the last step, with the steps decided together with it
    when it was one of several parallel calls (`agent.loop`)."""
    if not history:
        return []
    calls = history[-1].decision.get("calls")
    first = calls.get("decided_at_step") if isinstance(calls, dict) else None
    if not isinstance(first, int):
        return [history[-1]]
    return [step for step in history if step.number >= first]


def refusals(history: Sequence[Step]) -> int:
    """Actions of the run so far that a policy or an approver refused."""
    count = 0
    for step in history:
        policy = step.decision.get("policy") or {}
        approval = step.decision.get("approval") or {}
        if policy.get("verdict") == Deny.kind or approval.get("status") == "denied":
            count += 1
    return count


class Governance:
    """Policies and approvals for the run loop; one per process, shared by its runs."""

    def __init__(
        self,
        policies: PolicyStore,
        approvals: ApprovalStore,
        audit: AuditLog,
        settings: GovernanceSettings,
        sql: TenantSql | None = None,
        sql_checks: SqlChecks | None = None,
    ) -> None:
        self._policies = policies
        self._approvals = approvals
        self._audit = audit
        self.settings = settings
        self._sql = sql
        self.sql_checks = sql_checks if sql_checks is not None else SqlChecks()
        """The SQL guard's memory, shared with the sql_query tool so a query is parsed once."""

    async def open(self, run: Run, agent: AgentDefinition, history: Sequence[Step]) -> RunGate:
        records = await self._policies.active(run.tenant_id, agent.name)
        policy = EffectivePolicy.of(records) if records else NO_POLICY
        # The actions of the last turn that waited for people, and what they decided.
        awaiting = tuple(step for step in last_turn(history) if is_gated(step))
        decided = {s.number: await self._approvals.for_step(run.id, s.number) for s in awaiting}
        provenance = Provenance.of_run(run.input, agent.instructions, history)
        catalog = await sql_views.catalog_for(policy, agent, self._sql)
        return RunGate(self, run, policy, provenance, awaiting, decided, catalog)

    async def audit_step(self, run: Run, step: Step, effects: Sequence[OutboxEffect]) -> None:
        """Link a governed action to the audit log (`agent.policy.step_audit`), once: when the
        audit sweep has appended this step's entry already, nothing is written."""
        kinds = [e.kind for e in effects]
        entry = step_audit.step_entry(
            run.tenant_id, step, kinds, gated=is_gated(step), api_key_id=run.api_key_id
        )
        await step_audit.append(self._audit, entry)


class RunGate:
    """Governance of one run while a worker drives it."""

    def __init__(
        self,
        governance: Governance,
        run: Run,
        policy: EffectivePolicy,
        provenance: Provenance,
        awaiting: tuple[Step, ...],
        decided: Mapping[int, Approval | None],
        catalog: SqlCatalog | None = None,
    ) -> None:
        self._governance = governance
        self._run = run
        self.policy = policy
        self._provenance = provenance
        self._catalog = catalog
        """What sql_query may read, when a `view` rule needs it (`agent.policy.sql_views`)."""
        self.awaiting = awaiting
        """The last turn's steps whose actions waited for a person, in the order proposed."""
        self.resume_due = bool(awaiting)
        """Actions of the last turn waited on approvals: the next turn carries out the
        decisions (`resume`), with no model call."""
        self._decided = dict(decided)

    @property
    def search_tags(self) -> tuple[str, ...]:
        return self.policy.search_tags

    def rule(self, action: Action, history: Sequence[Step], shown: JSON | None = None) -> Ruling:
        """Judge `action`; `shown` is the deciding step's context (its passages count as
        untrusted content already: the model read them in this very prompt)."""
        arguments = action.arguments
        taints = self._provenance.taints(arguments, shown)
        notes: JSON = {}
        if taints:
            notes["provenance"] = [t.as_json() for t in taints]
        if not self.policy.active:
            return Ruling(notes, action)
        ctx = self._context(action.tool, arguments, taints)
        if isinstance(ctx, Rejected):
            return Ruling(notes, None, sql_refusal(ctx))
        verdict = self.policy.evaluate(ProposedAction(action.tool, arguments), ctx)
        notes["policy"] = verdict_record(verdict, self.policy.version)
        if isinstance(verdict, Allow):
            return Ruling(notes, action)
        if isinstance(verdict, Deny):
            return self._denied(notes, verdict, history, codes.POLICY_DENIED)
        ttl = self.policy.ttl_s(self._governance.settings.approval_ttl_s)
        approval_id = str(uuid.uuid4())
        notes["approval"] = {"id": approval_id, "ttl_s": ttl}
        result = {
            "approval": {
                "id": approval_id,
                "status": ApprovalStatus.PENDING.value,
                "rule": verdict.rule,
                "reason": verdict.reason,
            }
        }
        return Ruling(notes, None, result, RunOutcome(RunStatus.AWAITING_APPROVAL))

    def _denied(self, notes: JSON, verdict: Verdict, history: Sequence[Step], code: str) -> Ruling:
        message = f"{verdict.reason} (rule {verdict.rule})"
        limit = self._governance.settings.policy_max_denials
        outcome = GOES_ON
        if refusals(history) + 1 >= limit:
            outcome = RunOutcome(
                RunStatus.FAILED,
                failure_code=codes.POLICY_DENIED,
                failure_detail=f"{limit} of the run's actions were refused; the last: {message}",
            )
        return Ruling(notes, None, refusal(code, message), outcome)

    def resume(
        self, gated: Step, tools: Mapping[str, Tool[Any]], history: Sequence[Step]
    ) -> tuple[Ruling, str, JSON]:
        """The step after the approval of `gated` was decided: (ruling, tool, arguments shown).
        The ruling runs the approved action, or refuses it with the reason the model is told."""
        approval = self._decided.get(gated.number)
        tool = gated.tool or ""
        proposed: JSON = gated.arguments or {}
        notes: JSON = {"resumed_step": gated.number}
        if approval is None:
            notes["approval"] = {"status": None}
            message = "this action has no approval in this run (it was copied from another run)"
            ruling = self._denied(notes, Deny("approval", message), history, codes.APPROVAL_MISSING)
            return ruling, tool, proposed
        notes["approval"] = {
            "id": str(approval.id),
            "status": approval.status.value,
            "decided_by": approval.decided_by,
            "reason": approval.decision_reason,
            "edited": approval.edited,
        }
        if approval.status is not ApprovalStatus.APPROVED or approval.final_arguments is None:
            why = approval.decision_reason or "no reason given"
            denied = Deny("approval", f"an approver denied this {tool}: {why}")
            return self._denied(notes, denied, history, codes.APPROVAL_DENIED), tool, proposed
        final = approval.final_arguments
        if tool not in tools:
            denied = Deny("agent.tools", f"the agent may no longer call {tool}")
            return self._denied(notes, denied, history, codes.TOOL_NOT_ALLOWED), tool, final
        try:
            action = Action(tool=tool, args=tools[tool].validate(final))
        except ValidationError as exc:
            denied = Deny("approval", f"the approved arguments are no longer valid: {exc}")
            return self._denied(notes, denied, history, codes.POLICY_DENIED), tool, final
        if self.policy.active:
            # Approved by a person, so an approval requirement is met; a deny is not (the
            # policy may have tightened while the run waited, and an approver's edit may hold
            # a value from untrusted content).
            taints = self._provenance.approved(action.arguments, gated.decision.get("provenance"))
            if taints:
                notes["provenance"] = [t.as_json() for t in taints]
            ctx = self._context(tool, action.arguments, taints)
            if isinstance(ctx, Rejected):
                return Ruling(notes, None, sql_refusal(ctx)), tool, final
            verdict = self.policy.evaluate(ProposedAction(tool, action.arguments), ctx)
            notes["policy"] = verdict_record(verdict, self.policy.version)
            if isinstance(verdict, Deny):
                return self._denied(notes, verdict, history, codes.POLICY_DENIED), tool, final
        return Ruling(notes, action), tool, final

    def _context(
        self, tool: str, arguments: JSON, taints: Sequence[Taint]
    ) -> EvaluationContext | Rejected:
        """What the policy knows of a call besides its arguments: which came from untrusted
        content and, for an sql_query under a `view` rule, the views it reads; or the SQL
        guard's refusal of its query."""
        views = None
        if self.policy.reads_views:
            found = sql_views.views_of(tool, arguments, self._catalog, self._governance.sql_checks)
            if isinstance(found, Rejected):
                return found
            views = found
        return EvaluationContext(untrusted=frozenset(t.path for t in taints), views=views)

    def read(self, step: Step) -> None:
        """A step committed: what its tool brought in is untrusted from now on."""
        self._provenance.read(step)

    def audited(self, step: Step, effects: Sequence[OutboxEffect]) -> bool:
        """Whether the step goes to the audit log (`agent.policy.step_audit.audited`)."""
        return step_audit.audited(step, [e.kind for e in effects])

    async def audit(self, step: Step, effects: Sequence[OutboxEffect]) -> None:
        if self.audited(step, effects):
            await self._governance.audit_step(self._run, step, effects)
