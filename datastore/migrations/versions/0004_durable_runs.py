"""Durable runs: the full lifecycle, idempotent submission, forks, the outbox and run events.

- `runs.status` gains `awaiting_approval`, `budget_exhausted` and `parked`.
- `runs.idempotency_key` (+ the hash of the request it came with) makes a resubmission return the
  first run; unique per tenant.
- `runs.cancel_requested_at`: a cancel of a running run takes effect at its next step boundary.
- `runs.parent_run_id`, `forked_from_step`, `deployment`: a fork's lineage and its pinned model.
- `outbox`: one row per side effect, written in the step's transaction, delivered by the
  dispatcher; `idempotency_key` (run, step, call) is unique, so a step can never queue it twice.
- `run_events`: every state change and committed step, written by a trigger on `runs` in the same
  transaction and announced with NOTIFY, so the event stream cannot miss or invent anything and
  `Last-Event-ID` resumes from the table.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
UUID = pg.UUID(as_uuid=True)

STATUSES = (
    "queued",
    "running",
    "awaiting_approval",
    "succeeded",
    "failed",
    "cancelled",
    "budget_exhausted",
    "parked",
)
OLD_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def _status_check(statuses: Sequence[str]) -> str:
    return "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")"


EVENTS_FUNCTION = """
CREATE FUNCTION garrison_run_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    event_id bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO run_events (run_id, tenant_id, kind, status, step_number)
        VALUES (NEW.id, NEW.tenant_id, 'state', NEW.status, NEW.step_count)
        RETURNING id INTO event_id;
        PERFORM pg_notify('garrison_run_events', NEW.id::text || ':' || event_id);
        RETURN NEW;
    END IF;
    -- A committed step comes before the state change it caused, so a watcher sees the step that
    -- finished a run before the run's final state.
    IF NEW.step_count > OLD.step_count THEN
        INSERT INTO run_events (run_id, tenant_id, kind, status, step_number)
        VALUES (NEW.id, NEW.tenant_id, 'step', NEW.status, NEW.step_count)
        RETURNING id INTO event_id;
        PERFORM pg_notify('garrison_run_events', NEW.id::text || ':' || event_id);
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO run_events (run_id, tenant_id, kind, status, step_number)
        VALUES (NEW.id, NEW.tenant_id, 'state', NEW.status, NEW.step_count)
        RETURNING id INTO event_id;
        PERFORM pg_notify('garrison_run_events', NEW.id::text || ':' || event_id);
    END IF;
    RETURN NEW;
END
$$;
"""


def upgrade() -> None:
    op.drop_constraint("status_known", "runs", type_="check")
    op.create_check_constraint("status_known", "runs", _status_check(STATUSES))
    op.add_column("runs", sa.Column("idempotency_key", sa.String(200)))
    op.add_column("runs", sa.Column("request_hash", sa.String(64)))
    op.add_column("runs", sa.Column("cancel_requested_at", TS))
    op.add_column("runs", sa.Column("parent_run_id", UUID, sa.ForeignKey("runs.id")))
    op.add_column("runs", sa.Column("forked_from_step", sa.Integer))
    op.add_column("runs", sa.Column("deployment", sa.String(63)))
    op.create_index(
        "uq_runs_tenant_idempotency_key",
        "runs",
        ["tenant_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("tenant_id", UUID, sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("run_id", UUID, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("step_number", sa.Integer, nullable=False),
        sa.Column("call_index", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", pg.JSONB, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("locked_by", sa.String(128)),
        sa.Column("locked_until", TS),
        sa.Column("last_error", sa.Text),
        sa.Column("response", pg.JSONB),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("delivered_at", TS),
        sa.UniqueConstraint("idempotency_key"),
        sa.CheckConstraint("kind IN ('email', 'http')", name="kind_known"),
        sa.CheckConstraint(
            "status IN ('pending', 'delivering', 'delivered', 'failed')", name="status_known"
        ),
    )
    op.create_index(
        "ix_outbox_due",
        "outbox",
        ["next_attempt_at"],
        postgresql_where=sa.text("status IN ('pending', 'delivering')"),
    )
    op.create_index("ix_outbox_run_id", "outbox", ["run_id", "step_number"])

    op.create_table(
        "run_events",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("run_id", UUID, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("tenant_id", UUID, sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("step_number", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_run_events_run_id", "run_events", ["run_id", "id"])
    op.execute(EVENTS_FUNCTION)
    op.execute(
        "CREATE TRIGGER runs_events AFTER INSERT OR UPDATE OF status, step_count ON runs "
        "FOR EACH ROW EXECUTE FUNCTION garrison_run_event()"
    )
    # Runs that existed before events did get their current state as their first event.
    op.execute(
        "INSERT INTO run_events (run_id, tenant_id, kind, status, step_number) "
        "SELECT id, tenant_id, 'state', status, step_count FROM runs ORDER BY created_at"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER runs_events ON runs")
    op.execute("DROP FUNCTION garrison_run_event()")
    op.drop_table("run_events")
    op.drop_table("outbox")
    op.drop_index("uq_runs_tenant_idempotency_key", "runs")
    for column in (
        "deployment",
        "forked_from_step",
        "parent_run_id",
        "cancel_requested_at",
        "request_hash",
        "idempotency_key",
    ):
        op.drop_column("runs", column)
    op.drop_constraint("status_known", "runs", type_="check")
    op.create_check_constraint("status_known", "runs", _status_check(OLD_STATUSES))
