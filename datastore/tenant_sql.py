"""Runs `sql_query`'s SQL as the tenant's own LOGIN role, with a deadline and row/byte caps.

Each query gets a connection of its own, opened as the tenant's role (never the application's,
never `SET ROLE`, which `RESET ROLE` would undo), and closed afterwards, so nothing a query does
to its session can outlive it. The connection options set the read-only default, statement and
lock timeouts and the search path; connection options override role defaults, so a role that
altered its own defaults gains nothing. The statement is sent with the extended protocol, which
carries exactly one statement, inside `BEGIN READ ONLY`, and its rows are streamed: the runner
stops reading at `max_rows` or `max_bytes` and reports the cut. The deadline is the client's
(`asyncio.timeout`, then psycopg cancels the query on the server); `statement_timeout` is only
the backstop.

The allow-listed catalog (views and functions of `tenant_data`) is read as the application and
cached briefly. A view owned by a superuser or a BYPASSRLS role is left out: it would read its
base tables past row-level security.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from decimal import Decimal
from typing import Any, Final, cast

import psycopg
from psycopg import errors as pgerrors
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from agent.ports import SqlCatalog, SqlFailure, SqlLimits, SqlRows
from datastore.errors import translated
from datastore.tenant_roles import SQL_SCHEMA, RoleCredentials, TenantRoleRepository

log = logging.getLogger(__name__)

SQL_TIMEOUT: Final = "sql_timeout"
SQL_ERROR: Final = "sql_error"
SQL_NOT_CONFIGURED: Final = "sql_not_configured"
APPLICATION_NAME: Final = "garrison-sql"
CATALOG_TTL_S: Final = 30.0
MAX_CELL_BYTES: Final = 256
"""Binary values are shown as hex of at most this many bytes."""

CATALOG_SQL = text(
    """
    SELECT c.relname AS name,
           array_agg(a.attname::text ORDER BY a.attnum) AS columns
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_roles o ON o.oid = c.relowner
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE n.nspname = :schema AND c.relkind = 'v' AND NOT o.rolsuper AND NOT o.rolbypassrls
    GROUP BY c.relname
    """
)
FUNCTIONS_SQL = text(
    """
    SELECT DISTINCT p.proname AS name FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = :schema AND p.prokind = 'f'
    """
)


class TenantSqlRunner:
    """Implements `agent.ports.TenantSql` on the application's database."""

    def __init__(self, engine: AsyncEngine, roles: TenantRoleRepository) -> None:
        self._engine = engine
        self._roles = roles
        self._credentials: dict[uuid.UUID, RoleCredentials] = {}
        self._catalog: tuple[float, SqlCatalog] | None = None

    async def catalog(self) -> SqlCatalog:
        cached = self._catalog
        if cached is not None and time.monotonic() - cached[0] < CATALOG_TTL_S:
            return cached[1]
        async with translated(), self._engine.connect() as conn:
            views = (await conn.execute(CATALOG_SQL, {"schema": SQL_SCHEMA})).all()
            functions = (await conn.execute(FUNCTIONS_SQL, {"schema": SQL_SCHEMA})).all()
        catalog = SqlCatalog(
            schema=SQL_SCHEMA,
            views={row.name: tuple(row.columns) for row in views},
            functions=frozenset(row.name for row in functions),
        )
        self._catalog = (time.monotonic(), catalog)
        return catalog

    async def run(self, tenant_id: uuid.UUID, sql: str, limits: SqlLimits) -> SqlRows | SqlFailure:
        credentials = await self._credentials_of(tenant_id)
        if credentials is None:
            return SqlFailure(
                SQL_NOT_CONFIGURED,
                "this tenant has no database role: the appliance's database user may not "
                "create roles",
            )
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limits.timeout_s):
                try:
                    conn = await self._connect(credentials, limits)
                except psycopg.OperationalError as exc:
                    # Refused by name ("password authentication failed for user ...", "role
                    # ... does not exist"): the role was changed behind our back (a role may
                    # change its own password). Provision it again and retry once.
                    if f'"{credentials.role}"' not in str(exc):
                        raise
                    log.warning("repairing the sql role of tenant %s: %s", tenant_id, exc)
                    repaired = await self._repair(tenant_id)
                    if repaired is None:
                        raise
                    conn = await self._connect(repaired, limits)
                return await self._query(conn, sql, limits, started)
        except TimeoutError:
            return SqlFailure(
                SQL_TIMEOUT,
                f"the query did not finish within {limits.timeout_s:g} s and was cancelled",
            )
        except pgerrors.QueryCanceled:
            return SqlFailure(SQL_TIMEOUT, "the query ran past the database's statement timeout")
        except psycopg.Error as exc:
            return SqlFailure(SQL_ERROR, _describe(exc))

    async def _credentials_of(self, tenant_id: uuid.UUID) -> RoleCredentials | None:
        found = self._credentials.get(tenant_id)
        if found is None:
            found = await self._roles.credentials(tenant_id)
            if found is not None:
                self._credentials[tenant_id] = found
        return found

    async def _repair(self, tenant_id: uuid.UUID) -> RoleCredentials | None:
        self._credentials.pop(tenant_id, None)
        if await self._roles.provision(tenant_id) is None:
            return None
        return await self._credentials_of(tenant_id)

    def connect_args(self, credentials: RoleCredentials, limits: SqlLimits) -> dict[str, Any]:
        """libpq arguments for a connection as the tenant's role to the application's database:
        the engine's own URL translation (unix-socket hosts included), another user."""
        _, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
        kwargs.pop("context", None)
        backstop_ms = int(limits.timeout_s * 1000) + 1000
        options = {
            "default_transaction_read_only": "on",
            "statement_timeout": str(backstop_ms),
            "lock_timeout": "2000",
            "idle_in_transaction_session_timeout": str(backstop_ms),
            "search_path": SQL_SCHEMA,
        }
        kwargs.update(
            user=credentials.role,
            password=credentials.password,
            options=" ".join(f"-c {k}={v}" for k, v in options.items()),
            application_name=APPLICATION_NAME,
            connect_timeout=max(1, math.ceil(limits.timeout_s)),
        )
        return dict(kwargs)

    async def _connect(
        self, credentials: RoleCredentials, limits: SqlLimits
    ) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(**self.connect_args(credentials, limits))

    async def _query(
        self, conn: psycopg.AsyncConnection[Any], sql: str, limits: SqlLimits, started: float
    ) -> SqlRows:
        try:
            await conn.set_read_only(True)  # BEGIN READ ONLY, whatever the session defaults say
            cur = conn.cursor()
            rows: list[list[Any]] = []
            size = 2  # the enclosing brackets of the rows as JSON
            truncated: str | None = None
            # stream() sends the query with the extended protocol (one statement, never a
            # batch) and reads rows one at a time, so a huge result is never materialised.
            # Closed at once on an early stop: psycopg then cancels the rest of the query.
            stream = cur.stream(sql)
            async with aclosing(cast(AsyncGenerator[Any, None], stream)):
                async for row in stream:
                    if len(rows) >= limits.max_rows:
                        truncated = "rows"
                        break
                    values = [_json_value(v) for v in row]
                    row_bytes = len(json.dumps(values, ensure_ascii=False).encode()) + 1
                    if size + row_bytes > limits.max_bytes:
                        truncated = "bytes"
                        break
                    size += row_bytes
                    rows.append(values)
            columns = tuple(c.name for c in cur.description or ())
            return SqlRows(
                columns=columns,
                rows=rows,
                truncated=truncated,
                elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
            )
        finally:
            # Closing ends the session and its transaction; nothing it did is committed.
            await conn.close()


def _describe(exc: psycopg.Error) -> str:
    diag = exc.diag
    message = diag.message_primary or str(exc).strip() or type(exc).__name__
    if diag.message_hint:
        message += f" (hint: {diag.message_hint})"
    return message[:500]


def _json_value(value: Any) -> Any:
    """A JSON-ready rendering of one column value, as recorded on the step."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float | Decimal):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | dt.timedelta):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        shown = raw[:MAX_CELL_BYTES]
        return {"bytes": len(raw), "base64": base64.b64encode(shown).decode()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)
