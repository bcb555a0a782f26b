"""Alembic migrations, run under a Postgres advisory lock.

Several processes may start at once (`garrison up`, extra workers, API replicas); the lock makes
exactly one of them migrate while the others wait and then find nothing to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from datastore.engine import create_sync
from datastore.errors import MigrationError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# An arbitrary constant shared by every Garrison process: "the migration lock".
MIGRATION_LOCK_KEY = 0x6A7272_150


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    current: str | None
    head: str
    pending: tuple[str, ...]

    @property
    def up_to_date(self) -> bool:
        return not self.pending


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def upgrade(url: str, revision: str = "head") -> MigrationStatus:
    engine = create_sync(url)
    try:
        with engine.begin() as conn:
            # Transaction-scoped: released by the commit, and by Postgres if this process dies.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            cfg = _config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return status(url)
    except MigrationError:
        raise
    except Exception as exc:
        raise MigrationError(f"migration to {revision} failed: {exc}") from exc
    finally:
        engine.dispose()


def downgrade(url: str, revision: str) -> None:
    engine = create_sync(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            cfg = _config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
    finally:
        engine.dispose()


def status(url: str) -> MigrationStatus:
    script = ScriptDirectory.from_config(_config())
    head = script.get_current_head()
    if head is None:
        raise MigrationError("no migrations found")
    engine = create_sync(url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    pending = tuple(rev.revision for rev in reversed(list(script.iterate_revisions(head, current))))
    return MigrationStatus(current=current, head=head, pending=pending)
