"""The model registry as the operator sees it: synced into the database, listed from there.

Routing itself is `serving.router`; this service only records which deployments exist, so that
`garrison models list` and auditors see the registry the appliance last ran with.
"""

from __future__ import annotations

from agent.domain import ModelDeploymentRecord, ModelSync
from agent.ports import ModelDeploymentStore
from serving.registry import Deployment, Registry


def record_of(deployment: Deployment) -> ModelDeploymentRecord:
    return ModelDeploymentRecord(
        name=deployment.name,
        spec=deployment.model_dump(mode="json"),
        roles=deployment.roles,
        placement_kind=deployment.placement.kind,
    )


class ModelCatalog:
    def __init__(self, store: ModelDeploymentStore, registry: Registry) -> None:
        self._store = store
        self._registry = registry

    async def sync(self, *, actor: str) -> ModelSync:
        """Store the active registry: add, change and remove rows to match it exactly."""
        records = [record_of(d) for d in self._registry.deployments]
        return await self._store.sync(records, actor=actor)

    async def list_deployments(self) -> list[ModelDeploymentRecord]:
        return await self._store.list_deployments()
