"""Committing steps: the run loop's hot path, as one statement and one round trip per batch.

A step, its effect on the run and its side effects' outbox rows commit together in one
statement (`COMMIT_SQL`): a guarded UPDATE of the run, the INSERT of the step and the INSERT of
its outbox rows as data-modifying CTEs, sent as a single autocommitted, server-prepared
statement on a connection of its own. There is no pool checkout, no pre-ping and no separate
BEGIN/COMMIT, so a lone step costs one round trip and one WAL flush.

Steps that arrive while a commit is in flight are committed together in the next one (group
commit): under load, one WAL flush serves many runs' steps, without any added wait when the
appliance is idle. Each step in a batch is still all-or-nothing on its own: a step whose guard
fails (the worker lost its lease, or it is not the next step) writes nothing and is reported as
lost, while the others commit. A batch that fails for any other reason is retried one step at a
time, so one bad step cannot fail its neighbours.

A turn of several steps (parallel calls) is one commit: its steps are rows of the batch that
share the commit's index; the last (`head`) guards and moves the run, the others go in with it
or not at all.

A connection lost mid-commit leaves the outcome unknown. The committer then reconnects and reads
back whether each step is stored (matched by run, number and its own start time): a committed
step is never written twice, and an uncommitted one is retried under its guard.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row

from agent.domain import (
    OutboxEffect,
    RunOutcome,
    RunStatus,
    Step,
    check_transition,
    effect_key,
)
from datastore.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

MAX_BATCH = 256
"""Steps per commit at most; bounds the statement size under a burst."""

# A step may move a running run only to these; the statuses the SQL below can write are checked
# against the one transition table when this module is imported.
for _status in RunStatus:
    if _status in (RunStatus.RUNNING, RunStatus.CANCELLED) or _status.terminal:
        check_transition(RunStatus.RUNNING, _status)

# The new status: a step that ends the run keeps its own outcome (the work it reports happened);
# otherwise a cancel requested while the step ran ends the run now, at the step boundary; else
# the step's outcome (awaiting approval, say) or still running.
COMMIT_SQL = """
WITH input AS (
    SELECT * FROM jsonb_to_recordset(%(batch)s::jsonb) AS i(
        idx int, head boolean, first_number int, run_prompt int, run_completion int,
        run_id uuid, worker_id text, number int, status text,
        context jsonb, decision jsonb, tool text, arguments jsonb, result jsonb,
        error_code text, prompt_tokens int, completion_tokens int,
        model_ms float8, tool_ms float8, started_at timestamptz, finished_at timestamptz,
        outcome text, ends boolean, output text, failure_code text, failure_detail text,
        cancel_detail text, effects jsonb, approval jsonb)
),
moved AS (
    UPDATE runs r SET
        step_count = i.number,
        prompt_tokens = r.prompt_tokens + i.run_prompt,
        completion_tokens = r.completion_tokens + i.run_completion,
        -- Progress: a run is parked only when its workers die on every attempt at one step.
        -- The worker that commits this step goes on to the next under the same claim, so that
        -- claim is already one attempt at the next step (a clean release gives it back).
        stalled_attempts = CASE WHEN NOT i.ends AND r.cancel_requested_at IS NULL
                                     AND coalesce(i.outcome, 'running') = 'running'
                                THEN 1 ELSE 0 END,
        -- A step that ends the run keeps its own outcome (the work it reports happened);
        -- otherwise a cancel requested while it ran ends the run now, at the step boundary;
        -- else the step's outcome (awaiting approval, say), or still running.
        status = CASE WHEN i.ends THEN i.outcome
                      WHEN r.cancel_requested_at IS NOT NULL THEN 'cancelled'
                      ELSE coalesce(i.outcome, 'running') END,
        -- Only a running run keeps its worker and lease.
        worker_id = CASE WHEN NOT i.ends AND r.cancel_requested_at IS NULL
                              AND coalesce(i.outcome, 'running') = 'running'
                         THEN r.worker_id END,
        lease_expires_at = CASE WHEN NOT i.ends AND r.cancel_requested_at IS NULL
                                     AND coalesce(i.outcome, 'running') = 'running'
                                THEN r.lease_expires_at END,
        finished_at = CASE WHEN i.ends OR r.cancel_requested_at IS NOT NULL THEN now()
                           ELSE r.finished_at END,
        output = CASE WHEN i.ends THEN i.output ELSE r.output END,
        failure_code = CASE WHEN i.ends THEN i.failure_code
                            WHEN r.cancel_requested_at IS NOT NULL THEN 'cancelled'
                            ELSE r.failure_code END,
        failure_detail = CASE WHEN i.ends THEN i.failure_detail
                              WHEN r.cancel_requested_at IS NOT NULL THEN i.cancel_detail
                              ELSE r.failure_detail END
    FROM input i
    WHERE i.head AND r.id = i.run_id AND r.worker_id = i.worker_id AND r.status = 'running'
      AND r.step_count = i.first_number - 1
    RETURNING i.idx, r.*
),
written AS (
    INSERT INTO steps (run_id, tenant_id, number, status, context, decision, tool, arguments,
                       result, error_code, prompt_tokens, completion_tokens, model_ms, tool_ms,
                       started_at, finished_at)
    SELECT i.run_id, m.tenant_id, i.number, i.status, i.context, i.decision, i.tool, i.arguments,
           i.result, i.error_code, i.prompt_tokens, i.completion_tokens, i.model_ms, i.tool_ms,
           i.started_at, i.finished_at
    FROM input i JOIN moved m ON m.idx = i.idx
),
queued AS (
    INSERT INTO outbox (tenant_id, run_id, step_number, call_index, idempotency_key, kind,
                        payload)
    SELECT m.tenant_id, i.run_id, i.number, (e.effect->>'index')::int, e.effect->>'key',
           e.effect->>'kind', e.effect->'payload'
    FROM input i JOIN moved m ON m.idx = i.idx, jsonb_array_elements(i.effects) AS e(effect)
),
-- A step whose action waits for a person parks its run and creates the approval with it (a
-- turn of parallel calls may create several); not when a cancel requested meanwhile ended the
-- run instead (nobody would ever decide it).
parked AS (
    INSERT INTO approvals (id, tenant_id, run_id, step_number, tool, arguments, rule, reason,
                           policy, provenance, expires_at)
    SELECT (i.approval->>'id')::uuid, m.tenant_id, i.run_id, i.number, i.tool, i.arguments,
           i.approval->>'rule', i.approval->>'reason', i.approval->'policy',
           coalesce(i.approval->'provenance', '[]'::jsonb),
           now() + make_interval(secs => (i.approval->>'ttl_s')::float8)
    FROM input i JOIN moved m ON m.idx = i.idx
    WHERE jsonb_typeof(i.approval) = 'object' AND m.status = 'awaiting_approval'
)
SELECT * FROM moved
"""

# Whether a step is stored, after a connection died with its commit's outcome unknown.
RESOLVE_SQL = """
SELECT r.*, s.started_at AS step_started_at
FROM runs r LEFT JOIN steps s ON s.run_id = r.id AND s.number = %(number)s
WHERE r.id = %(run_id)s
"""


@dataclass(frozen=True, slots=True)
class StepCommit:
    """One step to commit, as the loop hands it over, with the steps of its turn before it."""

    step: Step
    """The turn's last step: it carries the guard and the run's outcome."""
    worker_id: str
    outcome: RunOutcome
    effects: Sequence[OutboxEffect] = ()
    before: Sequence[tuple[Step, Sequence[OutboxEffect]]] = ()
    """The turn's earlier steps (parallel calls), consecutive, committed with `step` or not."""

    def as_rows(self, idx: int) -> list[dict[str, Any]]:
        parts = [*self.before, (self.step, self.effects)]
        first = parts[0][0].number
        if [s.number for s, _e in parts] != list(range(first, first + len(parts))):
            raise ValueError("a turn's steps must be consecutive")
        prompt = sum(s.prompt_tokens for s, _e in parts)
        completion = sum(s.completion_tokens for s, _e in parts)
        rows = [self._row(idx, s, e) for s, e in parts]
        for row in rows:
            row.update(head=False, first_number=first, run_prompt=prompt, run_completion=completion)
        rows[-1]["head"] = True
        return rows

    def _row(self, idx: int, step: Step, effects: Sequence[OutboxEffect]) -> dict[str, Any]:
        outcome = self.outcome
        if outcome.status is not None:
            check_transition(RunStatus.RUNNING, outcome.status)
        ends = outcome.status is not None and outcome.status.terminal
        return {
            "idx": idx,
            "run_id": str(step.run_id),
            "worker_id": self.worker_id,
            "number": step.number,
            "status": step.status.value,
            "context": step.context,
            "decision": step.decision,
            "tool": step.tool,
            "arguments": step.arguments,
            "result": step.result,
            "error_code": step.error_code,
            "prompt_tokens": step.prompt_tokens,
            "completion_tokens": step.completion_tokens,
            "model_ms": step.model_ms,
            "tool_ms": step.tool_ms,
            "started_at": step.started_at.isoformat(),
            "finished_at": step.finished_at.isoformat(),
            "outcome": None if outcome.status is None else outcome.status.value,
            "ends": ends,
            "output": outcome.output,
            "failure_code": outcome.failure_code,
            "failure_detail": outcome.failure_detail,
            "cancel_detail": f"cancelled; it stopped after step {step.number}",
            "effects": [
                {
                    "index": n,
                    "key": effect_key(step.run_id, step.number, n),
                    "kind": e.kind,
                    "payload": e.payload,
                }
                for n, e in enumerate(effects)
            ],
            "approval": self._approval(step),
        }

    def _approval(self, step: Step) -> dict[str, Any] | None:
        """The approval a step parking its run creates, from what the policy gate recorded on
        the step's decision (`agent.policy.gate`): its id and expiry, the verdict, the taints."""
        if self.outcome.status is not RunStatus.AWAITING_APPROVAL:
            return None
        decision = step.decision
        request, policy = decision.get("approval"), decision.get("policy") or {}
        if not isinstance(request, dict) or "ttl_s" not in request:
            return None  # a step of the turn that does not wait for anyone
        return {
            "id": request["id"],
            "ttl_s": request["ttl_s"],
            "rule": policy.get("rule"),
            "reason": policy.get("reason"),
            "policy": policy,
            "provenance": decision.get("provenance") or [],
        }


@dataclass
class _Pending:
    commit: StepCommit
    done: asyncio.Future[Any | None] = field(repr=False)
    """Resolves to the run's row once committed, to None when the guard refused the step."""


class StepCommitter:
    """Commits steps for one process over one dedicated connection, batching under load."""

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0) -> None:
        self._url = url
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._queue: list[_Pending] = []
        self._wake: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def commit(self, commit: StepCommit) -> Any | None:
        """The run's row after the step committed, or None when its guard refused it."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A committer serves one event loop; tests and CLI commands may run several.
            self._reset(loop)
        assert self._wake is not None
        pending = _Pending(commit, loop.create_future())
        self._queue.append(pending)
        self._wake.set()
        return await pending.done

    async def close(self) -> None:
        if self._flusher is not None and self._loop is asyncio.get_running_loop():
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        self._flusher = None
        if self._conn is not None and self._loop is asyncio.get_running_loop():
            await self._conn.close()
        self._conn = None
        self._loop = None

    def _reset(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._conn = None  # a connection belongs to the loop that opened it
        self._queue = []
        self._wake = asyncio.Event()
        self._flusher = loop.create_task(self._flush_forever(), name="step-committer")

    async def _flush_forever(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._flush(batch)

    async def _flush(self, batch: list[_Pending]) -> None:
        try:
            rows = await self._execute([p.commit for p in batch])
        except DatabaseUnavailable as exc:
            await self._resolve_unknown(batch, exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].done.done():
                    batch[0].done.set_exception(exc)
                return
            log.warning("a batch of %d steps failed; committing them one by one", len(batch))
            for pending in batch:
                await self._flush([pending])
            return
        for n, pending in enumerate(batch):
            if not pending.done.done():
                pending.done.set_result(rows.get(n))

    async def _execute(self, commits: Sequence[StepCommit]) -> dict[int, Any]:
        conn = await self._connection()
        batch = json.dumps([row for n, c in enumerate(commits) for row in c.as_rows(n)])
        try:
            cur = await conn.execute(COMMIT_SQL, {"batch": batch})
            return {row.idx: row for row in await cur.fetchall()}
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            await self._drop_connection()
            raise DatabaseUnavailable("the database connection was lost") from exc

    async def _resolve_unknown(self, batch: list[_Pending], cause: DatabaseUnavailable) -> None:
        """After a lost connection: which steps did commit? Retry the rest once."""
        retry: list[_Pending] = []
        try:
            conn = await self._connection()
            for pending in batch:
                step = pending.commit.step
                cur = await conn.execute(
                    RESOLVE_SQL, {"run_id": step.run_id, "number": step.number}
                )
                row = await cur.fetchone()
                if row is not None and row.step_started_at == step.started_at:
                    pending.done.set_result(row)
                else:
                    retry.append(pending)
            rows = await self._execute([p.commit for p in retry]) if retry else {}
        except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnavailable):
            await self._drop_connection()
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(cause)
            return
        for n, pending in enumerate(retry):
            pending.done.set_result(rows.get(n))

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._url,
                    autocommit=True,
                    row_factory=namedtuple_row,
                    connect_timeout=max(1, int(self._connect_timeout_s)),
                )
            except (psycopg.OperationalError, OSError) as exc:
                raise DatabaseUnavailable("the database is unreachable") from exc
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                await conn.close()
            except Exception:  # already broken; nothing more to release
                log.debug("closing a broken committer connection failed", exc_info=True)
