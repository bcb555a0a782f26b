"""Submitting runs and reading them back, always inside the caller's tenant."""

from __future__ import annotations

import uuid

from agent.domain import Principal, Run, RunStatus, Step
from agent.errors import CallerError, NotFound
from agent.ports import AgentStore, RunStore

MAX_INPUT_CHARS = 20_000


class RunService:
    def __init__(self, agents: AgentStore, runs: RunStore) -> None:
        self._agents = agents
        self._runs = runs

    async def submit(self, principal: Principal, agent_name: str, input: str) -> Run:
        if not input.strip():
            raise CallerError("input must not be empty")
        if len(input) > MAX_INPUT_CHARS:
            raise CallerError(f"input is longer than {MAX_INPUT_CHARS} characters")
        agent = await self._agents.get_agent(principal.tenant_id, agent_name)
        if agent is None:
            raise NotFound(f"agent {agent_name!r} not found")
        return await self._runs.create_run(principal.tenant_id, agent, input, principal.key_id)

    async def get(self, run_id: uuid.UUID, tenant_id: uuid.UUID | None) -> Run:
        run = await self._runs.get_run(run_id, tenant_id)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        return run

    async def steps(self, run_id: uuid.UUID, tenant_id: uuid.UUID | None) -> list[Step]:
        await self.get(run_id, tenant_id)  # a foreign or unknown run is a 404, not an empty list
        return await self._runs.list_steps(run_id, tenant_id)

    async def list(
        self, tenant_id: uuid.UUID | None, status: RunStatus | None = None, limit: int = 50
    ) -> list[Run]:
        if not 1 <= limit <= 1000:
            raise CallerError("limit must be between 1 and 1000")
        return await self._runs.list_runs(tenant_id, status, limit)
