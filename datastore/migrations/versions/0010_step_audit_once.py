"""Every governed step audited exactly once: at most one entry per step, and a sweep's watermark.

A step's audit entry is appended after the step commits (`agent.policy.gate`), so a worker that
dies in between, or an append that fails, leaves a governed step without its entry. The fix is
at least once (a sweep appends what is missing) plus idempotent (a step's second append is a
no-op), which needs three things here:

- `uq_audit_log_step`: at most one entry with `object_type = 'step'` per `object_id`
  (`<run_id>:<number>`). It is also the index the idempotency check and the sweep's anti-join
  look entries up by. The log is append-only, so a step already audited twice could not be
  deduplicated: such surplus entries (nothing ever wrote one, the live path appended once per
  committed step, but the migration checks rather than assumes) are named by id in the index's
  second column, the only entries it lets share a step. Without any, the index is plainly
  unique on `object_id`.
- `ix_steps_governed`: the steps whose decision alone makes them audited (an approval, a resumed
  approval, a verdict other than allow), a minority of all steps; the full check that
  `garrison audit verify` runs reads them through it instead of every step. Steps audited only
  for their side effects are found from the outbox. The predicate must stay the one the queries
  in `datastore.repos.audit_sweep` use, or the planner cannot match it.
- `audit_sweep`: one row, the sweep's watermark (`through`: every step with a lower or equal id
  was examined) and the next range's upper bound (`mark_id`, the highest step id when `mark_at`
  was taken). It starts at 0 so the first sweep examines every step committed before this
  revision, and backfills what an earlier crash lost.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

GOVERNED = (
    "decision ? 'approval' OR decision ? 'resumed_step' "
    "OR coalesce(decision -> 'policy' -> 'verdict', '\"allow\"'::jsonb) <> '\"allow\"'::jsonb"
)
"""A frozen copy of `datastore.repos.audit_sweep.GOVERNED` as of this revision."""


def upgrade() -> None:
    conn = op.get_bind()
    surplus = [
        int(i)
        for (i,) in conn.execute(
            sa.text(
                "SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY object_id ORDER BY id)"
                " AS nth FROM audit_log WHERE object_type = 'step') e WHERE nth > 1 ORDER BY id"
            )
        )
    ]
    if surplus:
        listed = ",".join(str(i) for i in surplus)
        columns = f"object_id, (CASE WHEN id IN ({listed}) THEN id ELSE 0 END)"
    else:
        columns = "object_id"
    op.execute(
        f"CREATE UNIQUE INDEX uq_audit_log_step ON audit_log ({columns}) WHERE object_type = 'step'"
    )
    op.execute(f"CREATE INDEX ix_steps_governed ON steps (id) WHERE {GOVERNED}")
    op.create_table(
        "audit_sweep",
        sa.Column("id", sa.SmallInteger, primary_key=True),
        sa.Column("through", sa.BigInteger, nullable=False),
        sa.Column("mark_id", sa.BigInteger, nullable=False),
        sa.Column("mark_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_sweep_one_row"),
    )
    op.execute(
        "INSERT INTO audit_sweep (id, through, mark_id, mark_at) "
        "SELECT 1, 0, coalesce(max(id), 0), now() FROM steps"
    )


def downgrade() -> None:
    op.drop_table("audit_sweep")
    op.drop_index("ix_steps_governed", table_name="steps")
    op.drop_index("uq_audit_log_step", table_name="audit_log")
