"""`/v1/runs/{id}/effects`: the emails and HTTP requests a run queued, and their delivery."""

from __future__ import annotations

from fastapi import APIRouter

from agent.api.deps import AUTHORIZED, PrincipalDep, RunId, ServicesDep
from agent.api.effect_schemas import EffectList, EffectOut
from agent.api.errors import error_responses
from agent.api.schemas import RUNS_PATH

router = APIRouter(prefix=RUNS_PATH, tags=["runs"], dependencies=AUTHORIZED)

MAX_EFFECTS = 1000
"""A run takes at most 200 steps with one effect each, so this is every row of any run."""


@router.get(
    "/{run_id}/effects",
    summary="Read a run's side effects",
    description=(
        "Every email and HTTP request the run's committed steps queued, in step order, with "
        "delivery status, attempts, the last error and the receiver's answer."
    ),
    responses=error_responses(401, 403, 404, 422, 500, 503),
)
async def list_effects(run_id: RunId, principal: PrincipalDep, services: ServicesDep) -> EffectList:
    items = await services.outbox.list(
        principal.tenant_id, run_id=run_id, limit=MAX_EFFECTS, access_tags=principal.access_tags
    )
    return EffectList(data=[EffectOut.from_domain(i) for i in items])
