"""`/v1/runs`: submit a run, list the tenant's runs, read one run and its steps."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from agent.api.deps import PrincipalDep, RunId, ServicesDep
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

router = APIRouter(prefix=RUNS_PATH, tags=["runs"])

_READ_ERRORS = error_responses(401, 404, 422, 500, 503)


@router.post(
    "",
    status_code=202,
    summary="Submit a run",
    description="Queues a run of the named agent; a worker picks it up. Poll the `self` link.",
    responses=error_responses(401, 404, 413, 422, 500, 503),
)
async def create_run(
    body: RunCreate, principal: PrincipalDep, services: ServicesDep, response: Response
) -> RunSummary:
    run = await services.runs.submit(principal, body.agent, body.input)
    accepted = RunSummary.from_domain(run)
    response.headers["Location"] = accepted.links.self_
    return accepted


@router.get(
    "",
    summary="List runs",
    description="The caller's tenant's runs, newest first.",
    responses=error_responses(401, 422, 500, 503),
)
async def list_runs(
    principal: PrincipalDep,
    services: ServicesDep,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> RunList:
    runs = await services.runs.list(principal.tenant_id, status, limit)
    return RunList(data=[RunSummary.from_domain(r) for r in runs])


@router.get("/{run_id}", summary="Read a run", responses=_READ_ERRORS)
async def get_run(run_id: RunId, principal: PrincipalDep, services: ServicesDep) -> RunDetail:
    return RunDetail.from_domain(await services.runs.get(run_id, principal.tenant_id))


@router.get(
    "/{run_id}/steps",
    summary="Read a run's steps",
    description="Every committed step: what the model saw and chose, what the tool did.",
    responses=_READ_ERRORS,
)
async def list_steps(run_id: RunId, principal: PrincipalDep, services: ServicesDep) -> StepList:
    steps = await services.runs.steps(run_id, principal.tenant_id)
    return StepList(data=[StepOut.from_domain(s) for s in steps])
