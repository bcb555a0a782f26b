"""`/v1/runs/{id}/replay` and `/v1/runs/{id}/fork`: check a run against today's code, and start
a new run from one of its steps."""

from __future__ import annotations

from fastapi import APIRouter, Response

from agent.api.deps import AUTHORIZED, PrincipalDep, RunId, ServicesDep
from agent.api.errors import error_responses
from agent.api.fork_schemas import ForkCreate, ReplayOut
from agent.api.schemas import RUNS_PATH, RunDetail

router = APIRouter(prefix=RUNS_PATH, tags=["runs"], dependencies=AUTHORIZED)


@router.post(
    "/{run_id}/replay",
    summary="Replay a run against today's code",
    description=(
        "Re-drives today's orchestration code over the run's recorded model answers and tool "
        "results — no model is called, no tool runs, nothing is written — and reports the "
        "first step where it decides differently, or `match: true`. A run with no steps is "
        "409 `run_has_no_steps`."
    ),
    responses=error_responses(401, 403, 404, 409, 413, 422, 500, 503),
)
async def replay_run(run_id: RunId, principal: PrincipalDep, services: ServicesDep) -> ReplayOut:
    report = await services.replays.replay(
        run_id, principal.tenant_id, access_tags=principal.access_tags
    )
    return ReplayOut.from_domain(report)


@router.post(
    "/{run_id}/fork",
    status_code=202,
    summary="Fork a run from a step",
    description=(
        "Queues a new run with the same agent and input whose steps 1..`from_step` are copies "
        "of this run's; a worker takes it from step `from_step`+1, live. Side effects of the "
        "copied steps are not repeated. `deployment` pins its decisions to one model."
    ),
    responses=error_responses(401, 403, 404, 413, 422, 500, 503),
)
async def fork_run(
    run_id: RunId,
    body: ForkCreate,
    principal: PrincipalDep,
    services: ServicesDep,
    response: Response,
) -> RunDetail:
    fork = await services.forks.fork(
        run_id,
        principal.tenant_id,
        from_step=body.from_step,
        deployment=body.deployment,
        api_key_id=principal.key_id,
        actor=principal.actor,
        access_tags=principal.access_tags,
    )
    accepted = RunDetail.from_domain(fork)
    response.headers["Location"] = accepted.links.self_
    return accepted
