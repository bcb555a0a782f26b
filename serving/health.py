"""Live health of deployments: is each engine answering right now, and how the router sees it.

A probe is `GET /v1/models` under a short deadline of its own, so one hung engine cannot make a
health check take the model call timeout. Probes never touch the breaker or the in-flight count:
they observe routing, they do not take part in it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from serving.errors import ServingError
from serving.lane import Lane

PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class DeploymentHealth:
    """One deployment's state, as reported by `Router.health`."""

    name: str
    roles: tuple[str, ...]
    kind: str
    """`local` (Garrison runs the engine) or `external`."""
    url: str
    """Where it answers, without any credentials."""
    ok: bool
    """The engine answered the probe."""
    detail: str
    """`reachable`, or why not."""
    breaker: str
    """`closed`, `open` or `half_open`."""
    in_flight: int
    """Routed calls in progress right now."""


async def probe(lane: Lane, timeout_s: float = PROBE_TIMEOUT_S) -> DeploymentHealth:
    try:
        await asyncio.wait_for(lane.client.ping(), timeout_s)
    except TimeoutError:
        ok, detail = False, f"no answer within {timeout_s:g} s"
    except ServingError as exc:
        ok, detail = False, f"{exc.code}: {exc.message}"
    else:
        ok, detail = True, "reachable"
    deployment = lane.deployment
    return DeploymentHealth(
        name=deployment.name,
        roles=deployment.roles,
        kind=deployment.placement.kind,
        url=lane.url,
        ok=ok,
        detail=detail,
        breaker=lane.breaker.state.value,
        in_flight=lane.in_flight,
    )
