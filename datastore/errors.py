"""Datastore errors. Driver exceptions are translated here so callers never import SQLAlchemy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import psycopg
import sqlalchemy.exc


class DatastoreError(Exception):
    code: ClassVar[str] = "datastore_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DatabaseUnavailable(DatastoreError):
    """The database cannot be reached or dropped the connection: an infrastructure fault."""

    code = "database_unavailable"


class EmbeddedPostgresError(DatastoreError):
    code = "embedded_postgres_failed"


class MigrationError(DatastoreError):
    code = "migration_failed"


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """Turn connection-level driver failures into `DatabaseUnavailable`.

    Only failures of the *connection* are translated: a constraint violation is a bug or a caller
    error and must surface as itself, not hide behind "unavailable".
    """
    try:
        yield
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        raise DatabaseUnavailable("the database is unreachable") from exc
    # The same failures raised by psycopg itself, on the raw connection that COPY and vector
    # search use (`datastore.driver`).
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise DatabaseUnavailable("the database is unreachable") from exc
    except sqlalchemy.exc.TimeoutError as exc:
        raise DatabaseUnavailable("no database connection became free in time") from exc
    except sqlalchemy.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable("the database connection was lost") from exc
        raise
    except OSError as exc:
        raise DatabaseUnavailable(f"the database is unreachable: {exc.strerror or exc}") from exc
