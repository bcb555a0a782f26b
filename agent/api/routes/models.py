"""`/v1/models`: the model deployments this appliance routes to, and whether each answers."""

from __future__ import annotations

from fastapi import APIRouter

from agent.api.deps import AUTHORIZED, PrincipalDep, ServicesDep
from agent.api.errors import error_responses
from agent.api.model_schemas import MODELS_PATH, ModelList, ModelOut

router = APIRouter(prefix=MODELS_PATH, tags=["models"], dependencies=AUTHORIZED)

PROBE_TIMEOUT_S = 2.0


@router.get(
    "",
    summary="List model deployments",
    description=(
        "Every deployment in the active registry: the roles it serves, where it runs, what it "
        "can do, and its health right now (each engine is probed, briefly)."
    ),
    responses=error_responses(401, 403, 422, 500, 503),
)
async def list_models(principal: PrincipalDep, services: ServicesDep) -> ModelList:
    del principal  # admin keys only (agent.api.roles): the catalogue is appliance-wide
    health = {h.name: h for h in await services.models.health(PROBE_TIMEOUT_S)}
    deployments = services.models.registry.deployments
    return ModelList(data=[ModelOut.from_serving(d, health[d.name]) for d in deployments])
