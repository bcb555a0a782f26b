"""The wire format of `/v1/approvals`: actions waiting for a person, and the decisions on them.

An approver sees what the model proposed (tool and arguments), why a person must decide (the
policy rule and its reason, and which arguments came from untrusted content and from where),
until when, and afterwards who decided what (the approved arguments, edited or not).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from agent.api.schemas import RUNS_PATH, Model, Request, StorableObject, StorableText
from agent.domain import Approval, ApprovalStatus

APPROVALS_PATH = "/v1/approvals"


class ApprovalLinks(Model):
    self_: str = Field(serialization_alias="self")
    run: str


class ApprovalOut(Model):
    id: uuid.UUID
    run_id: uuid.UUID
    agent: str
    step: int
    """The step that proposed the action; it runs (or is refused) in the next step."""
    tool: str
    arguments: dict[str, Any]
    """As the model proposed them."""
    status: ApprovalStatus
    """`pending` until decided; `approved`, `denied`, `expired` (the run failed
    `approval_expired`) or `cancelled` (the run was cancelled) after."""
    rule: str | None
    reason: str | None
    """Why a person decides: the policy rule and its reason."""
    provenance: list[dict[str, Any]]
    """Arguments that came from documents or tool output rather than the task, and where from."""
    policy_version: dict[str, Any] | None
    """The tenant's and the agent's policy versions that asked for this approval."""
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    decision_reason: str | None
    final_arguments: dict[str, Any] | None
    """What was approved: the proposed arguments or the approver's edit of them."""
    edited: bool
    links: ApprovalLinks

    @classmethod
    def from_domain(cls, approval: Approval) -> ApprovalOut:
        return cls(
            id=approval.id,
            run_id=approval.run_id,
            agent=approval.agent_name,
            step=approval.step_number,
            tool=approval.tool,
            arguments=approval.arguments,
            status=approval.status,
            rule=approval.rule,
            reason=approval.reason,
            provenance=approval.provenance,
            policy_version=approval.policy.get("version"),
            created_at=approval.created_at,
            expires_at=approval.expires_at,
            decided_at=approval.decided_at,
            decided_by=approval.decided_by,
            decision_reason=approval.decision_reason,
            final_arguments=approval.final_arguments,
            edited=approval.edited,
            links=ApprovalLinks(
                self_=f"{APPROVALS_PATH}/{approval.id}", run=f"{RUNS_PATH}/{approval.run_id}"
            ),
        )


class ApprovalList(Model):
    data: list[ApprovalOut]


class ApproveRequest(Request):
    arguments: StorableObject | None = None
    """Replace the proposed arguments: validated against the tool's schema and judged by the
    policy again (422 `invalid_request`, 409 `policy_denied` and nothing decided if refused)."""
    reason: StorableText | None = Field(default=None, max_length=1000)


class DenyRequest(Request):
    reason: StorableText = Field(min_length=1, max_length=1000)
    """Told to the model, which goes on without the action."""
