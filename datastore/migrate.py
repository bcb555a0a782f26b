"""Alembic migrations, run under a Postgres advisory lock.

Several processes may start at once (`garrison up`, extra workers, API replicas); the lock makes
exactly one of them migrate while the others wait and then find nothing to do.

Each revision commits on its own (`transaction_per_migration`, set in `migrations/env.py`), so a
revision may build an index CONCURRENTLY in an autocommit block (0012) without committing half
of another. A failed run leaves the database at the last revision that committed, and the next
run goes on from there. The lock is therefore held by the session, across those commits, rather
than by one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from datastore.engine import create_sync
from datastore.errors import MigrationError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# An arbitrary constant shared by every Garrison process: "the migration lock".
MIGRATION_LOCK_KEY = 0x6A7272_150
LOCK_POLL_S = 0.2
"""How often a process waiting for the migration lock tries it again."""


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


@contextmanager
def _migration_lock(conn: Connection) -> Iterator[None]:
    """Hold the migration lock on `conn`'s session, which Postgres releases if this process dies.

    Taken by polling, never by a blocking `pg_advisory_lock`: a process blocked on the lock waits
    inside a statement, with a snapshot, and a CREATE INDEX CONCURRENTLY of the process migrating
    waits for every older snapshot of the database, so the two would deadlock. Between tries the
    waiter is idle, holding nothing the build waits for. On return no transaction is open, so
    Alembic begins and commits its own.
    """
    lock = {"k": MIGRATION_LOCK_KEY}
    while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), lock).scalar_one():
        conn.rollback()
        time.sleep(LOCK_POLL_S)
    conn.commit()
    try:
        yield
    finally:
        if not conn.invalidated:  # a lost connection has lost its lock with it
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), lock)
            conn.commit()


def upgrade(url: str, revision: str = "head") -> MigrationStatus:
    engine = create_sync(url)
    try:
        with engine.connect() as conn, _migration_lock(conn):
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
        with engine.connect() as conn, _migration_lock(conn):
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
