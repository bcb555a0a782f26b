"""Probes for supervisors and load balancers; neither needs an API key.

`/healthz` says the process answers (no I/O, so it stays cheap and never flaps with a
dependency). `/readyz` says whether requests can succeed now: every component reachable. Which
component is down is public; why (addresses, driver messages) goes only to the log.
"""

from __future__ import annotations

from fastapi import APIRouter

from agent.api.deps import ServicesDep
from agent.api.errors import NotReady, error_responses
from agent.api.schemas import ComponentStatus, ErrorDetail, Liveness, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> Liveness:
    return Liveness()


@router.get("/readyz", summary="Readiness", responses=error_responses(500, 503))
async def readyz(services: ServicesDep) -> Readiness:
    health = await services.health()
    components = [
        ComponentStatus(name=c.name, status="ok" if c.ok else "unavailable") for c in health
    ]
    down = [c for c in health if not c.ok]
    if down:
        raise NotReady(
            f"not ready: {', '.join(c.name for c in down)} unavailable",
            [ErrorDetail(loc=[c.name], msg=c.status) for c in components],
            internal="; ".join(f"{c.name}: {c.detail}" for c in down),
        )
    return Readiness(components=components)
