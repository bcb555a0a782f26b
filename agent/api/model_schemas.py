"""The wire format of `GET /v1/models`: what a client may know about the deployments.

Deliberately less than the registry holds: no model paths, engine arguments, URLs or ports,
which describe the machine rather than the service and could carry credentials.
"""

from __future__ import annotations

from typing import Literal

from agent.api.schemas import Model
from serving.health import DeploymentHealth
from serving.registry import Deployment

MODELS_PATH = "/v1/models"


class PlacementOut(Model):
    kind: Literal["local", "external"]
    """`local`: an engine this appliance runs; `external`: one it only calls."""
    device: Literal["cpu", "gpu"]
    gpus: list[int]


class CapabilitiesOut(Model):
    context_length: int
    """Tokens of prompt plus answer the model accepts."""
    structured_output: bool
    """Whether answers can be constrained to a JSON schema."""
    embedding_dim: int | None
    """Vector size, for embedding deployments."""


class HealthOut(Model):
    ok: bool
    """The engine answered a probe just now."""
    breaker: Literal["closed", "open", "half_open"]
    """`open`: the router skips it after repeated failures until a probe succeeds."""


class ModelOut(Model):
    name: str
    roles: list[str]
    """What it is used for, e.g. `decide`, `extract`, `embed`."""
    placement: PlacementOut
    capabilities: CapabilitiesOut
    health: HealthOut

    @classmethod
    def from_serving(cls, deployment: Deployment, health: DeploymentHealth) -> ModelOut:
        placement = deployment.placement
        caps = deployment.capabilities
        return cls(
            name=deployment.name,
            roles=list(deployment.roles),
            placement=PlacementOut(
                kind=placement.kind, device=placement.device, gpus=list(placement.gpus)
            ),
            capabilities=CapabilitiesOut(
                context_length=caps.context_length,
                structured_output=caps.structured_output,
                embedding_dim=caps.embedding_dim,
            ),
            health=HealthOut(ok=health.ok, breaker=health.breaker),
        )


class ModelList(Model):
    data: list[ModelOut]
