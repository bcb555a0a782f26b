"""Forking a run from step N, optionally onto another deployment, inside the caller's tenant.

The fork is a new queued run whose steps 1..N are copies of the parent's; a worker resumes it at
step N+1 like any run resuming from its committed steps, and everything from there is live. The
deployment pin (given, or inherited from the parent) must name a chat deployment of the active
registry: the worker would otherwise fail the run on its first decision.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from agent.domain import Run
from agent.errors import CallerError, NotFound
from agent.ports import RunStore
from serving.registry import Registry


class ForkStepOutOfRange(CallerError):
    code = "fork_step_out_of_range"


class UnknownDeployment(CallerError):
    code = "unknown_deployment"


class ForkStore(Protocol):
    async def fork_run(
        self,
        parent_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        *,
        from_step: int,
        deployment: str | None,
        api_key_id: uuid.UUID | None,
        actor: str,
        access_tags: tuple[str, ...] | None = None,
    ) -> uuid.UUID | None:
        """Create the fork (searching under `access_tags`), copy steps 1..from_step and audit
        it under `actor`, in one transaction; its id, or None when the parent does not exist
        for this tenant. Outbox rows are never copied."""
        ...


class ForkService:
    def __init__(self, runs: RunStore, forks: ForkStore, registry: Registry) -> None:
        self._runs = runs
        self._forks = forks
        self._registry = registry

    async def fork(
        self,
        run_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        *,
        from_step: int,
        deployment: str | None = None,
        api_key_id: uuid.UUID | None = None,
        actor: str,
        access_tags: tuple[str, ...] | None = None,
    ) -> Run:
        """A new queued run with the parent's steps 1..`from_step`; `tenant_id=None` is the
        operator's view across tenants (CLI only). `deployment=None` keeps the parent's pin.
        Audited under `actor` (`key:<id>` or `cli:<user>`). A restricted key forks only a run it
        may see (`agent.services.access.sees_run`; any other is `not_found`). The fork keeps
        the parent's scope, which is within the key's `access_tags` when the key may see the
        parent: forking widens neither."""
        parent = await self._runs.get_run(run_id, tenant_id, access_tags)
        if parent is None:
            raise NotFound(f"run {run_id} not found")
        if not 0 <= from_step <= parent.step_count:
            raise ForkStepOutOfRange(
                f"from_step must be between 0 and {parent.step_count} "
                f"(the committed steps of run {run_id}); got {from_step}"
            )
        pin = deployment if deployment is not None else parent.deployment
        if pin is not None:
            self._check_deployment(pin)
        fork_id = await self._forks.fork_run(
            run_id,
            tenant_id,
            from_step=from_step,
            deployment=pin,
            api_key_id=api_key_id,
            actor=actor,
            access_tags=parent.access_tags,
        )
        fork = None if fork_id is None else await self._runs.get_run(fork_id, parent.tenant_id)
        if fork is None:
            raise NotFound(f"run {run_id} not found")
        return fork

    def _check_deployment(self, name: str) -> None:
        found = self._registry.get(name)
        if found is None or found.is_embedding:
            chat = sorted(d.name for d in self._registry.deployments if not d.is_embedding)
            raise UnknownDeployment(
                f"no chat deployment named {name!r} in the active registry; "
                f"known: {', '.join(chat) or 'none'}"
            )
