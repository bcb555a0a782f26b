"""The audit entry of a governed step: whether a step gets one, what it says, and appending it.

One builder serves the live path (`Governance.audit_step`, right after the step commits) and the
audit sweep (`agent.policy.audit_sweep`, for a step whose live append was lost to a crash), so a
backfilled entry says exactly what the live one would have. It works only from what the
database keeps of a step: the step as committed, the kinds of its outbox effects, in call
order, and the key that submitted its run. Whether the step waited for a person (`is_gated`)
is the gate's to say and is passed in.

Audited: every step that ran a state-changing tool (`STATE_CHANGING_TOOLS`: a record write,
an email, an HTTP request), allowed or not, and every refusal, approval request and decision.
Read-only calls (search, SQL, record reads, finish) under no rule are not: they are the hot
path, every audit append takes the log's lock, and the step itself is their record.

A step has at most one entry (`AuditLog.append_once`): whichever of the live path and the
sweep comes second writes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from agent.domain import JSON, AuditEntry, Step, StepStatus
from agent.policy.verdicts import Allow
from agent.ports import AuditLog
from agent.ports.governance import STATE_CHANGING_TOOLS

OBJECT_TYPE = "step"


@dataclass(frozen=True, slots=True)
class StepEntry:
    """What a governed step's audit entry records (the log adds time and hashes)."""

    tenant_id: uuid.UUID
    actor: str
    """`run:<run_id>`: the run acted, under the key that submitted it (`detail.api_key_id`)."""
    action: str
    """`action.execute`, `action.refuse` or `action.await_approval`."""
    object_id: str
    """`<run_id>:<number>`, the step's identity: at most one entry per value."""
    detail: JSON
    object_type: str = OBJECT_TYPE


def object_id(run_id: uuid.UUID, number: int) -> str:
    return f"{run_id}:{number}"


def audited(step: Step, effect_kinds: Sequence[str]) -> bool:
    """Whether the step goes to the audit log: every completed step of a state-changing tool
    (its action ran, or was refused or parked), every action with a side effect, every
    refusal, every approval request and decision. Read-only calls under no rule do not.

    `datastore.repos.audit_sweep.GOVERNED` is the same test in SQL, minus the effects."""
    return (
        bool(effect_kinds)
        or (step.tool in STATE_CHANGING_TOOLS and step.status is StepStatus.COMPLETED)
        or any(k in step.decision for k in ("approval", "resumed_step"))
        or ((step.decision.get("policy") or {}).get("verdict", Allow.kind) != Allow.kind)
    )


def step_entry(
    tenant_id: uuid.UUID,
    step: Step,
    effect_kinds: Sequence[str],
    *,
    gated: bool,
    api_key_id: uuid.UUID | None,
) -> StepEntry:
    """The entry linking a governed action: the key that submitted the run, the run and step,
    the model's output, the action, its verdict (with the policy version), provenance and the
    approval decision. `gated`: the step proposed an action that now waits for a person."""
    return StepEntry(
        tenant_id=tenant_id,
        actor=f"run:{step.run_id}",
        action=_action(step, effect_kinds, gated),
        object_id=object_id(step.run_id, step.number),
        detail={
            "api_key_id": None if api_key_id is None else str(api_key_id),
            "tool": step.tool,
            "arguments": step.arguments,
            "model_output": _model_output(step),
            "policy": step.decision.get("policy"),
            "approval": step.decision.get("approval"),
            "provenance": step.decision.get("provenance"),
            "effects": list(effect_kinds),
        },
    )


async def append(log: AuditLog, entry: StepEntry) -> AuditEntry | None:
    """Append `entry` unless its step has one already (then None, and nothing written)."""
    return await log.append_once(
        tenant_id=entry.tenant_id,
        actor=entry.actor,
        action=entry.action,
        object_type=entry.object_type,
        object_id=entry.object_id,
        detail=entry.detail,
    )


def _action(step: Step, effect_kinds: Sequence[str], gated: bool) -> str:
    if effect_kinds:
        return "action.execute"
    if isinstance((step.result or {}).get("error"), dict):
        return "action.refuse"
    return "action.await_approval" if gated else "action.execute"


def _model_output(step: Step) -> str | None:
    attempts = step.decision.get("attempts") or []
    raw = attempts[-1].get("raw") if attempts else None
    return raw if isinstance(raw, str) else None
