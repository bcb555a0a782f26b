"""`/v1/runs`: submit a run (idempotently with a key), list the tenant's runs, read one run
and its steps, cancel a run, resume a parked one. A key with access tags sees only the runs
those tags cover (`agent.services.access.sees_run`); any other is 404."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from agent.api.deps import AUTHORIZED, PrincipalDep, RunId, ServicesDep
from agent.api.errors import error_responses
from agent.api.schemas import (
    RUNS_PATH,
    RunCreate,
    RunDetail,
    RunList,
    RunSummary,
    StepList,
    StepOut,
)
from agent.domain import RunStatus

router = APIRouter(prefix=RUNS_PATH, tags=["runs"], dependencies=AUTHORIZED)

_READ_ERRORS = error_responses(401, 403, 404, 422, 500, 503)
_CHANGE_ERRORS = error_responses(401, 403, 404, 409, 413, 422, 500, 503)
REPLAYED_HEADER = "Idempotent-Replayed"

_REPLAYED = {
    "model": RunSummary,
    "description": "The `Idempotency-Key` already created this run: nothing new was queued.",
    "headers": {
        REPLAYED_HEADER: {"description": "Always `true`.", "schema": {"type": "string"}},
        "Location": {"description": "The run's URL.", "schema": {"type": "string"}},
    },
}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description=(
            "1 to 200 printable ASCII characters, unique per request you mean to make. The same "
            "key with the same agent and input returns the run it created (200, "
            "`Idempotent-Replayed: true`); with other content it is 409 "
            "`idempotency_key_reused`; a malformed key is 422 `invalid_idempotency_key`."
        ),
    ),
]


@router.post(
    "",
    status_code=202,
    summary="Submit a run",
    description=(
        "Queues a run of the named agent; a worker picks it up. Poll the `self` link. Send an "
        "`Idempotency-Key` to make retries safe: a repeat returns the same run."
    ),
    responses={200: _REPLAYED, **_CHANGE_ERRORS},
)
async def create_run(
    body: RunCreate,
    principal: PrincipalDep,
    services: ServicesDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> RunSummary:
    submission = await services.runs.request(
        principal.tenant_id,
        body.agent,
        body.input,
        idempotency_key=idempotency_key,
        api_key_id=principal.key_id,
        access_tags=principal.access_tags,
    )
    accepted = RunSummary.from_domain(submission.run)
    response.headers["Location"] = accepted.links.self_
    if submission.replayed:
        response.status_code = 200
        response.headers[REPLAYED_HEADER] = "true"
    return accepted


@router.get(
    "",
    summary="List runs",
    description="The caller's tenant's runs, newest first.",
    responses=error_responses(401, 403, 422, 500, 503),
)
async def list_runs(
    principal: PrincipalDep,
    services: ServicesDep,
    status: Annotated[RunStatus | None, Query(description="Only runs in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> RunList:
    runs = await services.runs.list(
        principal.tenant_id, status, limit, access_tags=principal.access_tags
    )
    return RunList(data=[RunSummary.from_domain(r) for r in runs])


@router.get("/{run_id}", summary="Read a run", responses=_READ_ERRORS)
async def get_run(run_id: RunId, principal: PrincipalDep, services: ServicesDep) -> RunDetail:
    run = await services.runs.get(run_id, principal.tenant_id, access_tags=principal.access_tags)
    return RunDetail.from_domain(run)


@router.get(
    "/{run_id}/steps",
    summary="Read a run's steps",
    description="Every committed step: what the model saw and chose, what the tool did.",
    responses=_READ_ERRORS,
)
async def list_steps(run_id: RunId, principal: PrincipalDep, services: ServicesDep) -> StepList:
    steps = await services.runs.steps(
        run_id, principal.tenant_id, access_tags=principal.access_tags
    )
    return StepList(data=[StepOut.from_domain(s) for s in steps])


@router.post(
    "/{run_id}/cancel",
    summary="Cancel a run",
    description=(
        "A queued, parked or awaiting-approval run is `cancelled` at once. A running run gets "
        "`cancel_requested_at` and ends `cancelled` after the step in progress commits. A run "
        "that already ended is 409 `illegal_transition`."
    ),
    responses=_CHANGE_ERRORS,
)
async def cancel_run(run_id: RunId, principal: PrincipalDep, services: ServicesDep) -> RunDetail:
    run = await services.runs.cancel(
        run_id, principal.tenant_id, actor=principal.actor, access_tags=principal.access_tags
    )
    return RunDetail.from_domain(run)


@router.post(
    "/{run_id}/resume",
    summary="Resume a parked run",
    description=(
        "Queues a `parked` run again (its attempts count restarts); it continues from its last "
        "committed step. Any other status is 409 `illegal_transition`."
    ),
    responses=_CHANGE_ERRORS,
)
async def resume_run(run_id: RunId, principal: PrincipalDep, services: ServicesDep) -> RunDetail:
    run = await services.runs.resume(
        run_id, principal.tenant_id, actor=principal.actor, access_tags=principal.access_tags
    )
    return RunDetail.from_domain(run)
