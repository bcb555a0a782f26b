"""Submitting runs, reading them back and steering their lifecycle, always inside a tenant.

Submission may carry an idempotency key: the same key with the same request returns the run it
created the first time, with other content it is a conflict. Cancel and resume are operator
actions on the ledger; which transitions they may make is decided by `agent.domain`, and the
store applies them under a row lock so they are safe to race with workers.

Every read and change takes the caller's `access_tags` (None: the whole tenant): a restricted
key sees only the runs `agent.services.access.sees_run` lets it see, and any other run is
`not_found`, as another tenant's is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from dataclasses import dataclass

from agent.domain import Principal, Run, RunStatus, Step
from agent.errors import CallerError, Conflict, NotFound
from agent.ports import AgentStore, RunStore
from agent.services.access import AccessTags, sees_run

MAX_INPUT_CHARS = 20_000
MAX_IDEMPOTENCY_KEY_CHARS = 200
SETTLED_STATUSES = frozenset({RunStatus.PARKED, RunStatus.AWAITING_APPROVAL})
"""Not terminal, but nothing more happens to the run until a person acts on it."""


class InvalidIdempotencyKey(CallerError):
    code = "invalid_idempotency_key"


class IdempotencyKeyReused(Conflict):
    """The key already named a run submitted with a different agent or input."""

    code = "idempotency_key_reused"


@dataclass(frozen=True, slots=True)
class Submission:
    run: Run
    replayed: bool
    """True when the idempotency key had already created this run: nothing new was queued."""


def check_idempotency_key(key: str) -> str:
    """1..200 printable ASCII characters, not all blank (it travels in an HTTP header)."""
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not key.strip():
        raise InvalidIdempotencyKey(
            f"an idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"
        )
    if not all(" " <= ch <= "~" for ch in key):
        raise InvalidIdempotencyKey("an idempotency key must be printable ASCII characters")
    return key


def request_hash(agent_name: str, input: str) -> str:
    """What a replay must match: the sha256 of the agent and input, canonically encoded."""
    canonical = json.dumps({"agent": agent_name, "input": input}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class RunService:
    def __init__(self, agents: AgentStore, runs: RunStore) -> None:
        self._agents = agents
        self._runs = runs

    async def submit(
        self,
        principal: Principal,
        agent_name: str,
        input: str,
        idempotency_key: str | None = None,
    ) -> Run:
        submission = await self.request(
            principal.tenant_id,
            agent_name,
            input,
            idempotency_key=idempotency_key,
            api_key_id=principal.key_id,
            access_tags=principal.access_tags,
        )
        return submission.run

    async def request(
        self,
        tenant_id: uuid.UUID,
        agent_name: str,
        input: str,
        *,
        idempotency_key: str | None = None,
        api_key_id: uuid.UUID | None = None,
        access_tags: tuple[str, ...] | None = None,
    ) -> Submission:
        """Queue a run of the tenant's agent, or return the one this idempotency key made.

        `access_tags` (the submitting key's; None: the whole tenant) go with the run as a
        snapshot, and every search the run makes is narrowed to them. A snapshot, not the key's
        tags read again by the worker: the run retrieves under one scope from its first step to
        its last, replay re-drives it under the scope it had, and a key changed or revoked while
        the run is in flight does not change a run already accepted (revoking stops new ones).
        """
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        if not input.strip():
            raise CallerError("input must not be empty")
        if len(input) > MAX_INPUT_CHARS:
            raise CallerError(f"input is longer than {MAX_INPUT_CHARS} characters")
        agent = await self._agents.get_agent(tenant_id, agent_name)
        if agent is None:
            raise NotFound(f"agent {agent_name!r} not found")
        if idempotency_key is None:
            created = await self._runs.create_run(tenant_id, agent, input, api_key_id, access_tags)
            return Submission(created, False)
        digest = request_hash(agent.name, input)
        keyed = await self._runs.insert_keyed_run(
            tenant_id, agent, input, api_key_id, idempotency_key, digest, access_tags
        )
        if keyed is not None:
            return Submission(keyed, False)
        # The insert waited for any concurrent holder of the key to commit, so the run is there.
        existing = await self._runs.get_keyed_run(tenant_id, idempotency_key)
        if existing is None:  # runs are never deleted; only a broken store gets here
            raise RuntimeError(f"idempotency key {idempotency_key!r} is taken but holds no run")
        run, stored_hash = existing
        if not sees_run(run.access_tags, access_tags):
            # Held by a run this caller may not see: a conflict all the same, but without the
            # run's id, and whatever the content (a match would confirm what another key asked).
            raise IdempotencyKeyReused(
                "this idempotency key was already used for a different request; "
                "use a new key for a new request"
            )
        if stored_hash != digest:
            raise IdempotencyKeyReused(
                "this idempotency key was already used for a different request "
                f"(run {run.id}); use a new key for a new request"
            )
        return Submission(run, True)

    async def get(
        self, run_id: uuid.UUID, tenant_id: uuid.UUID | None, *, access_tags: AccessTags = None
    ) -> Run:
        run = await self._runs.get_run(run_id, tenant_id, access_tags)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        return run

    async def steps(
        self, run_id: uuid.UUID, tenant_id: uuid.UUID | None, *, access_tags: AccessTags = None
    ) -> list[Step]:
        # A foreign, hidden or unknown run is a 404, not an empty list.
        await self.get(run_id, tenant_id, access_tags=access_tags)
        return await self._runs.list_steps(run_id, tenant_id)

    async def list(
        self,
        tenant_id: uuid.UUID | None,
        status: RunStatus | None = None,
        limit: int = 50,
        *,
        access_tags: AccessTags = None,
    ) -> list[Run]:
        if not 1 <= limit <= 1000:
            raise CallerError("limit must be between 1 and 1000")
        return await self._runs.list_runs(tenant_id, status, limit, access_tags)

    async def cancel(
        self,
        run_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        *,
        actor: str,
        access_tags: AccessTags = None,
    ) -> Run:
        """Cancel a run: at once unless a worker is driving it, else at its next step boundary
        (the run comes back `running` with `cancel_requested_at` set). Audited under `actor`."""
        await self._visible(run_id, tenant_id, access_tags)
        run = await self._runs.cancel_run(run_id, tenant_id, actor=actor)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        return run

    async def resume(
        self,
        run_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        *,
        actor: str,
        access_tags: AccessTags = None,
    ) -> Run:
        """Queue a parked run again; it continues from its last committed step. Audited under
        `actor`."""
        await self._visible(run_id, tenant_id, access_tags)
        run = await self._runs.resume_run(run_id, tenant_id, actor=actor)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        return run

    async def wait(
        self,
        run_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        timeout_s: float,
        poll_s: float = 0.2,
        *,
        access_tags: AccessTags = None,
    ) -> Run | None:
        """The run once it ended or waits for a person (parked, awaiting approval); None if it
        is still going after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = await self.get(run_id, tenant_id, access_tags=access_tags)
            if run.status.terminal or run.status in SETTLED_STATUSES:
                return run
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    async def _visible(
        self, run_id: uuid.UUID, tenant_id: uuid.UUID | None, access_tags: AccessTags
    ) -> None:
        """`NotFound` before a change to a run a restricted caller may not see. Checked apart
        from the change's own row lock: a run's access tags never change once it is queued."""
        if access_tags is not None:
            await self.get(run_id, tenant_id, access_tags=access_tags)
