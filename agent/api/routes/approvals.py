"""`/v1/approvals`: list and read the tenant's approvals, approve (optionally editing the
arguments) or deny one. Deciding moves the run back to the queue; a worker then runs the
approved action once, or tells the model it was denied."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from agent.api.approval_schemas import (
    APPROVALS_PATH,
    ApprovalList,
    ApprovalOut,
    ApproveRequest,
    DenyRequest,
)
from agent.api.deps import AUTHORIZED, ApprovalId, PrincipalDep, ServicesDep
from agent.api.errors import error_responses
from agent.domain import ApprovalStatus, Principal, Role
from agent.errors import Forbidden

_DECIDERS = frozenset({Role.APPROVER, Role.ADMIN})


def approver(principal: PrincipalDep) -> Principal:
    """Only approvers (and admins) see and decide approvals: the key that submits work cannot
    approve its own side effects. Local until the API's role table covers these routes."""
    if not _DECIDERS & set(principal.roles):
        raise Forbidden("deciding approvals needs an API key with the approver role")
    return principal


ApproverDep = Annotated[Principal, Depends(approver)]
router = APIRouter(prefix=APPROVALS_PATH, tags=["approvals"], dependencies=AUTHORIZED)
_READ_ERRORS = error_responses(401, 403, 404, 422, 500, 503)
_DECIDE_ERRORS = error_responses(401, 403, 404, 409, 413, 422, 500, 503)


def _actor(principal: Principal) -> str:
    return f"key:{principal.key_id}"


@router.get(
    "",
    summary="List approvals",
    description="The tenant's approvals, newest first; `?status=pending` is the queue. "
    "With `?run_id=`, a run the key cannot see is 404 `not_found`.",
    responses=error_responses(401, 403, 404, 422, 500, 503),
)
async def list_approvals(
    principal: ApproverDep,
    services: ServicesDep,
    status: Annotated[ApprovalStatus | None, Query(description="Only in this status.")] = None,
    run_id: Annotated[uuid.UUID | None, Query(description="Only this run's.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ApprovalList:
    found = await services.approvals.list(
        principal.tenant_id,
        status=status,
        run_id=run_id,
        limit=limit,
        access_tags=principal.access_tags,
    )
    return ApprovalList(data=[ApprovalOut.from_domain(a) for a in found])


@router.get("/{approval_id}", summary="Read an approval", responses=_READ_ERRORS)
async def get_approval(
    approval_id: ApprovalId, principal: ApproverDep, services: ServicesDep
) -> ApprovalOut:
    approval = await services.approvals.get(
        approval_id, principal.tenant_id, access_tags=principal.access_tags
    )
    return ApprovalOut.from_domain(approval)


@router.post(
    "/{approval_id}/approve",
    summary="Approve an action",
    description=(
        "Approves the proposed action, or the action with `arguments` in place of the proposed "
        "ones (checked against the tool's schema and the policy; a refused edit decides "
        "nothing). The run is queued again and runs the action once. 409 `approval_decided`, "
        "`approval_expired`, `illegal_transition` (the run was cancelled) or `policy_denied`."
    ),
    responses=_DECIDE_ERRORS,
)
async def approve(
    approval_id: ApprovalId, body: ApproveRequest, principal: ApproverDep, services: ServicesDep
) -> ApprovalOut:
    approval = await services.approvals.approve(
        approval_id,
        principal.tenant_id,
        actor=_actor(principal),
        arguments=body.arguments,
        reason=body.reason,
        access_tags=principal.access_tags,
    )
    return ApprovalOut.from_domain(approval)


@router.post(
    "/{approval_id}/deny",
    summary="Deny an action",
    description=(
        "Denies the proposed action with a reason the model is told; the run is queued again "
        "and goes on without it."
    ),
    responses=_DECIDE_ERRORS,
)
async def deny(
    approval_id: ApprovalId, body: DenyRequest, principal: ApproverDep, services: ServicesDep
) -> ApprovalOut:
    approval = await services.approvals.deny(
        approval_id,
        principal.tenant_id,
        actor=_actor(principal),
        reason=body.reason,
        access_tags=principal.access_tags,
    )
    return ApprovalOut.from_domain(approval)
