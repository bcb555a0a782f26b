"""Deciding approvals: list and read them, approve (optionally with edited arguments) or deny.

An edit is a new proposal and is checked like one: validated against the tool's argument
schema, judged by the run's policy as it stands now (tenant and agent; an edited query by the
views the SQL guard finds it reads), and, for an HTTP request, by the appliance's egress
allow-list. An edit any of them refuses is refused
(`invalid_request` or `policy_denied`) and the approval stays pending. An edit the policy would
send for approval is accepted: the approver deciding on it *is* that approval. Reads are
tenant-scoped (another tenant's approval is not found); `tenant_id=None` is the CLI operator's
view; with a restricted key's `access_tags`, the approval of a run that key may not see is not
found either (`agent.services.access.sees_run`). The decision, the run's return to the queue and
the audit entry commit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from agent.domain import JSON, Approval, ApprovalStatus
from agent.errors import CallerError, NotFound
from agent.outbox.egress import EgressPolicy
from agent.policy.compiled import EffectivePolicy
from agent.policy.errors import ApprovalDecided, ApprovalExpired, PolicyDenied, RunNotAwaiting
from agent.policy.evaluators import EvaluationContext, ProposedAction
from agent.policy.verdicts import Deny
from agent.ports import ApprovalDecision, ApprovalStore, DecisionResult, PolicyStore, RunStore
from agent.services.access import AccessTags
from agent.sqlguard import Rejected
from agent.tools import Tool
from agent.tools.sql_query import SqlQuery

MAX_REASON_CHARS = 1000


class ApprovalService:
    def __init__(
        self,
        approvals: ApprovalStore,
        policies: PolicyStore,
        tools: Mapping[str, Tool[Any]],
        egress: EgressPolicy,
        runs: RunStore,
    ) -> None:
        self._approvals = approvals
        self._runs = runs
        self._policies = policies
        self._tools = tools
        self._egress = egress

    async def list(
        self,
        tenant_id: uuid.UUID | None,
        *,
        status: ApprovalStatus | None = None,
        run_id: uuid.UUID | None = None,
        limit: int = 50,
        access_tags: AccessTags = None,
    ) -> list[Approval]:
        """The approvals of the tenant, or of the run `run_id` names: a run the caller cannot
        see is not found, as the run itself is, rather than a run without approvals."""
        if not 1 <= limit <= 1000:
            raise CallerError("limit must be between 1 and 1000")
        if run_id is not None and await self._runs.get_run(run_id, tenant_id, access_tags) is None:
            raise NotFound(f"run {run_id} not found")
        return await self._approvals.list_approvals(
            tenant_id, status=status, run_id=run_id, limit=limit, access_tags=access_tags
        )

    async def get(
        self, approval_id: uuid.UUID, tenant_id: uuid.UUID | None, *, access_tags: AccessTags = None
    ) -> Approval:
        approval = await self._approvals.get(approval_id, tenant_id, access_tags)
        if approval is None:
            raise NotFound(f"approval {approval_id} not found")
        return approval

    async def approve(
        self,
        approval_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        *,
        actor: str,
        arguments: JSON | None = None,
        reason: str | None = None,
        access_tags: AccessTags = None,
    ) -> Approval:
        """Approve as proposed, or with `arguments` replacing the proposed ones (checked)."""
        approval = await self.get(approval_id, tenant_id, access_tags=access_tags)
        final = approval.arguments
        if arguments is not None and arguments != approval.arguments:
            final = await self._checked_edit(approval, arguments)
        decision = ApprovalDecision(
            ApprovalStatus.APPROVED, actor, _reason(reason, required=False), final
        )
        return await self._decide(approval, decision)

    async def deny(
        self,
        approval_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        *,
        actor: str,
        reason: str,
        access_tags: AccessTags = None,
    ) -> Approval:
        """Deny with a reason; the model is told it, and the run goes on without the action.
        The decision is taken on the approval `get` found: a run's access tags never change."""
        approval = await self.get(approval_id, tenant_id, access_tags=access_tags)
        decision = ApprovalDecision(ApprovalStatus.DENIED, actor, _reason(reason), None)
        return await self._decide(approval, decision)

    async def sweep(self) -> int:
        """Expire what waited too long (its run fails `approval_expired`); see the store."""
        return await self._approvals.sweep()

    async def _decide(self, approval: Approval, decision: ApprovalDecision) -> Approval:
        decided = await self._approvals.decide(approval.id, approval.tenant_id, decision)
        if decided is None:
            raise NotFound(f"approval {approval.id} not found")
        result, current = decided
        if result is DecisionResult.DECIDED:
            return current
        if current.status is ApprovalStatus.EXPIRED:  # just now, or by an earlier sweep
            raise ApprovalExpired(
                f"approval {approval.id} expired at {current.expires_at.isoformat()}; "
                "its run has failed (approval_expired)"
            )
        if result is DecisionResult.RUN_NOT_WAITING:
            raise RunNotAwaiting(
                f"run {approval.run_id} no longer waits for approval {approval.id}"
            )
        raise ApprovalDecided(f"approval {approval.id} is already {current.status}")

    async def _checked_edit(self, approval: Approval, arguments: JSON) -> JSON:
        tool = self._tools.get(approval.tool)
        if tool is None:
            raise CallerError(f"the tool {approval.tool} is not available any more")
        try:
            final: JSON = tool.validate(arguments).model_dump(mode="json")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
                for err in exc.errors()
            )
            raise CallerError(f"invalid arguments for {approval.tool}: {problems}") from None
        records = await self._policies.active(approval.tenant_id, approval.agent_name)
        policy = EffectivePolicy.of(records)
        views = None
        if policy.reads_views and isinstance(tool, SqlQuery):
            inspected = await tool.inspect(str(final["sql"]))
            if isinstance(inspected, Rejected):
                raise CallerError(f"invalid arguments for sql_query: {inspected.message}")
            views = inspected.views
        verdict = policy.evaluate(
            ProposedAction(approval.tool, final), EvaluationContext(views=views)
        )
        if isinstance(verdict, Deny):
            raise PolicyDenied(
                f"the edited {approval.tool} is denied by the policy: {verdict.reason} "
                f"(rule {verdict.rule})"
            )
        url = final.get("url")
        if approval.tool == "http_request" and isinstance(url, str):
            refusal = self._egress.refusal(url)
            if refusal is not None:
                raise PolicyDenied(f"the edited http_request is not allowed: {refusal}")
        return final


def _reason(reason: str | None, *, required: bool = True) -> str | None:
    text = (reason or "").strip()
    if not text:
        if required:
            raise CallerError("a denial needs a reason (the model is told it)")
        return None
    if len(text) > MAX_REASON_CHARS or "\x00" in text:
        raise CallerError(f"the reason must be at most {MAX_REASON_CHARS} characters of text")
    return text
