"""What the router keeps per deployment (client, breaker, in-flight count) and its policy knobs.

Split from `serving.router` so the routing walk reads on its own; `serving.health` reads lanes
too. Nothing here decides where a call goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from serving.breaker import CircuitBreaker
from serving.client import OpenAICompatibleClient, display_url
from serving.registry import Deployment, Registry, deployment_url
from serving.settings import ServingSettings


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """How hard the router tries before giving up on a deployment, and on a call."""

    retries: int = 2
    """Extra attempts on one deployment after `ModelUnavailable`."""
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 2.0
    deadline_s: float = 120.0
    """Overall deadline of one routed call, every retry and fallback included."""
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    overload_retry_after_s: float = 1.0
    """What `ModelOverloaded` tells callers to wait: one busy engine frees up in about this."""

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> RoutePolicy:
        return cls(
            retries=settings.model_retries,
            deadline_s=settings.deadline_s,
            breaker_failures=settings.breaker_failures,
            breaker_cooldown_s=settings.breaker_cooldown_s,
        )


@dataclass(eq=False)
class Lane:
    """One deployment as the router sees it."""

    deployment: Deployment
    url: str
    """The base URL for display: credentials removed."""
    client: OpenAICompatibleClient
    breaker: CircuitBreaker
    in_flight: int = 0
    """Routed calls holding this deployment now, retries and backoff included."""

    @property
    def name(self) -> str:
        return self.deployment.name


def open_lanes(
    registry: Registry,
    settings: ServingSettings,
    policy: RoutePolicy,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Lane]:
    """One lane per deployment, in registry order; each client has its own connection pool."""
    key = settings.model_api_key.get_secret_value() if settings.model_api_key else None
    lanes: dict[str, Lane] = {}
    for index, deployment in enumerate(registry.deployments):
        url = deployment_url(deployment, index)
        client = OpenAICompatibleClient(
            url,
            model=deployment.served_name,
            api_key=key,
            timeout_s=settings.model_timeout_s,
            embed_batch_size=settings.embed_batch_size,
        )
        breaker = CircuitBreaker(policy.breaker_failures, policy.breaker_cooldown_s, clock)
        lanes[deployment.name] = Lane(deployment, display_url(url), client, breaker)
    return lanes
