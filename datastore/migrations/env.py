"""Alembic environment: always runs on the connection `datastore.migrate` hands it."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from datastore.schema import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through `garrison db upgrade` (datastore.migrate)")

# One transaction per revision, begun and committed by Alembic itself (the connection comes
# without one): a revision's autocommit block (a CONCURRENTLY index build) then commits only
# that revision's work before it, never another revision's half.
context.configure(
    connection=connection, target_metadata=Base.metadata, transaction_per_migration=True
)
with context.begin_transaction():
    context.run_migrations()
