"""Every executed state change audited: `ix_steps_governed` also covers state-changing tools.

Until this revision a step was audited for its decision (an approval, a verdict other than
allow) or its outbox effects, so an allowed `write_record`, a state change with no outbox row,
had no audit entry. From now on every completed step of a state-changing tool is audited
(`agent.policy.step_audit.audited`; the tools are `agent.ports.governance.STATE_CHANGING_TOOLS`),
and `ix_steps_governed`, through which `garrison audit verify` finds such steps, is rebuilt
with that rule as its predicate: the text of `datastore.repos.audit_sweep.GOVERNED`.

The audit sweep's watermark goes back to the start, so the next sweep examines every step again
(through the index, governed steps only) and appends the entries that steps taken before this
revision are now owed, exactly as the live path writes them; a step audited already is skipped
(`uq_audit_log_step`). Until that sweep has run, `audit verify` reports those steps as missing.

Both ways the index is built CONCURRENTLY, in an autocommit block: `steps` is the hottest table,
and a plain build would hold off every step commit until it finished. The build commits apart
from the rest of the revision (which commits alone, `datastore.migrate`); one that fails leaves
an INVALID index under the name, and the revision still pending, so the retry drops it first.

Downgrading restores the index of 0010; entries appended meanwhile stay (the log is append-only).

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

DECIDED = (
    "decision ? 'approval' OR decision ? 'resumed_step' "
    "OR coalesce(decision -> 'policy' -> 'verdict', '\"allow\"'::jsonb) <> '\"allow\"'::jsonb"
)
"""The predicate of 0010: steps audited for their decision alone."""
GOVERNED = (
    DECIDED
    + " OR (status = 'completed' AND tool IN ('http_request', 'send_email', 'write_record'))"
)
"""A frozen copy of `datastore.repos.audit_sweep.GOVERNED` as of this revision."""


def _index(predicate: str) -> None:
    """Rebuild `ix_steps_governed` with `predicate`, writers never waiting for the build."""
    with op.get_context().autocommit_block():
        # IF EXISTS: also an INVALID index a failed build of this revision left behind.
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_steps_governed")
        op.execute(f"CREATE INDEX CONCURRENTLY ix_steps_governed ON steps (id) WHERE {predicate}")


def upgrade() -> None:
    _index(GOVERNED)
    op.execute("UPDATE audit_sweep SET through = 0 WHERE id = 1")


def downgrade() -> None:
    _index(DECIDED)
