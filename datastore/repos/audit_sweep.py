"""Finding governed steps that lack their audit entry: the sweep's ranges and verify's full check.

A step is committed first and audited after (`agent.policy.gate`), so a crash in between leaves
it without an entry; the sweep (`agent.policy.audit_sweep`) appends those. This module only
reads steps, outbox rows and the audit log, and keeps the sweep's place; the entries are built
by the agent (`agent.policy.step_audit`) and appended by `datastore.repos.audit`.

Why a watermark: the steps table grows without bound and most of it will never lack anything,
so a sweep every few seconds must not anti-join all of it. The `audit_sweep` row says which
steps were examined (`through`) and which are next (up to `mark_id`, the highest step id when
`mark_at` was taken). A range is examined once it has settled, `settle_s` after `mark_at`: by
then every step in it has committed (an id is drawn inside its step's single commit statement,
which takes milliseconds, not seconds) and the live path, which appends an entry milliseconds
after its commit, has had its turn. A sweep with nothing due costs one single-row read; a due
range costs one index range scan over the steps committed in it. `missing` (for `garrison audit
verify`) checks every step instead, through `ix_steps_governed` and the outbox, with no
watermark: it is what would show a step the sweep could not see.

Steps a fork copied from its parent (numbers up to the fork's `forked_from_step`) are the
parent's actions, audited under the parent's run: neither the sweep nor `missing` counts them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncEngine

from agent.ports.governance import (
    STATE_CHANGING_TOOLS,
    MissingEntries,
    MissingEntry,
    SweepRange,
    UnauditedStep,
)
from datastore.errors import translated
from datastore.repos.runs import _step as step_of

_STATE_CHANGING = ", ".join(f"'{tool}'" for tool in sorted(STATE_CHANGING_TOOLS))
GOVERNED = (
    "decision ? 'approval' OR decision ? 'resumed_step' "
    "OR coalesce(decision -> 'policy' -> 'verdict', '\"allow\"'::jsonb) <> '\"allow\"'::jsonb "
    f"OR (status = 'completed' AND tool IN ({_STATE_CHANGING}))"
)
"""Steps audited for what they are, as `agent.policy.step_audit.audited` decides: an approval
requested or decided, a verdict other than allow, or a completed step of a state-changing tool.
The text of `ix_steps_governed`'s predicate (migration 0012), so the planner can use that index;
a test holds the two equal."""

_EFFECTS_OF_S = "outbox o WHERE o.run_id = s.run_id AND o.step_number = s.number"
_NO_ENTRY = (
    "NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.object_type = 'step' "
    "AND a.object_id = {alias}.run_id::text || ':' || {alias}.number)"
)
_NOT_COPIED = (
    "NOT EXISTS (SELECT 1 FROM runs f WHERE f.id = {alias}.run_id "
    "AND {alias}.number <= f.forked_from_step)"
)

_STATE = text(
    "SELECT through, mark_id, mark_at <= now() - make_interval(secs => :settle) AS due "
    "FROM audit_sweep WHERE id = 1"
)
_UNAUDITED = text(
    f"""
SELECT s.*,
       coalesce((SELECT array_agg(o.kind ORDER BY o.call_index) FROM {_EFFECTS_OF_S}),
                '{{}}') AS effect_kinds,
       (SELECT r.api_key_id FROM runs r WHERE r.id = s.run_id) AS run_api_key_id
FROM steps s
WHERE s.id > :through AND s.id <= :mark
  AND ({GOVERNED} OR EXISTS (SELECT 1 FROM {_EFFECTS_OF_S}))
  AND {_NO_ENTRY.format(alias="s")}
  AND {_NOT_COPIED.format(alias="s")}
ORDER BY s.id
LIMIT :limit
"""  # noqa: S608 -- composed of this module's constants, no input
)
# The next range starts where this one ended and reaches the newest step committed now.
_ADVANCE = text(
    """
UPDATE audit_sweep
SET through = mark_id,
    mark_id = greatest(mark_id, (SELECT coalesce(max(id), 0) FROM steps)),
    mark_at = now()
WHERE id = 1 AND through = :through AND mark_id = :mark
"""
)
_ADVANCE_PART = text(
    "UPDATE audit_sweep SET through = :last WHERE id = 1 AND through = :through AND mark_id = :mark"
)
_MISSING = text(
    f"""
WITH candidates AS (
    SELECT run_id, number, tenant_id, finished_at FROM steps WHERE {GOVERNED}
    UNION
    SELECT s.run_id, s.number, s.tenant_id, s.finished_at
    FROM (SELECT DISTINCT run_id, step_number FROM outbox) o
    JOIN steps s ON s.run_id = o.run_id AND s.number = o.step_number
),
missing AS (
    SELECT c.* FROM candidates c
    WHERE {_NO_ENTRY.format(alias="c")} AND {_NOT_COPIED.format(alias="c")}
)
SELECT m.*, count(*) OVER () AS total,
       count(*) FILTER (WHERE m.finished_at < now() - make_interval(secs => :grace)) OVER ()
           AS overdue
FROM missing m
ORDER BY m.finished_at, m.run_id, m.number
LIMIT :sample
"""  # noqa: S608 -- composed of this module's constants, no input
)


def _unaudited(row: Row[Any]) -> UnauditedStep:
    return UnauditedStep(
        step_id=row.id,
        tenant_id=row.tenant_id,
        step=step_of(row),
        effect_kinds=tuple(row.effect_kinds),
        api_key_id=row.run_api_key_id,
    )


class StepAuditRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def due(self, limit: int, settle_s: float) -> SweepRange | None:
        async with translated(), self._engine.connect() as conn:
            state = (await conn.execute(_STATE, {"settle": settle_s})).one()
            if not state.due:
                return None
            rows = await conn.execute(
                _UNAUDITED, {"through": state.through, "mark": state.mark_id, "limit": limit}
            )
            steps = tuple(_unaudited(r) for r in rows)
        return SweepRange(state.through, state.mark_id, steps)

    async def advance(self, swept: SweepRange, complete: bool) -> None:
        where = {"through": swept.through, "mark": swept.mark_id}
        async with translated(), self._engine.begin() as conn:
            if complete:
                await conn.execute(_ADVANCE, where)
            elif swept.steps:
                await conn.execute(_ADVANCE_PART, {**where, "last": swept.steps[-1].step_id})

    async def missing(self, sample: int, grace_s: float) -> MissingEntries:
        if sample < 1:
            raise ValueError("sample at least one: the counts come with the sample's rows")
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(_MISSING, {"sample": sample, "grace": grace_s})).all()
        if not rows:
            return MissingEntries(0, 0, ())
        first = tuple(
            MissingEntry(
                run_id=r.run_id,
                number=r.number,
                tenant_id=r.tenant_id,
                finished_at=r.finished_at,
            )
            for r in rows
        )
        return MissingEntries(int(rows[0].total), int(rows[0].overdue), first)
