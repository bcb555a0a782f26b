"""Plain psycopg connections for the few statements a worker runs on every run and step.

Claiming a run, renewing its lease, reading its agent and its history are run thousands of times
a second under load, where SQLAlchemy's statement building, pool pre-ping and explicit
BEGIN/COMMIT cost more than the statements themselves (about 1-3 ms of CPU each, measured in
bench/durable_overhead.py). Here each is one hand-written statement, server-prepared after a few
uses, on an autocommit connection from psycopg's own pool: one round trip, no extra statements.

Everything else (the API's reads, administration) stays on SQLAlchemy, where clarity wins.
A connection that dies is dropped by the pool and the caller gets `DatabaseUnavailable`; the next
call gets a fresh connection, so a database restart costs one failed call, not a stale pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from datastore.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

Params = Mapping[str, Any] | Sequence[Any] | None


class FastPath:
    """A small pool of autocommit connections, opened on first use in the running event loop."""

    def __init__(
        self,
        url: str,
        *,
        max_size: int = 4,
        connect_timeout_s: float = 5.0,
        configure: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]] | None = None,
        name: str = "garrison-fastpath",
    ) -> None:
        """`configure` prepares each new connection once (types, session settings); the
        connection is in autocommit, so what it sets stays for the connection's life."""
        self._url = url
        self._max_size = max_size
        self._configure = configure
        self._name = name
        self._connect_timeout_s = connect_timeout_s
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def fetchone(self, sql: str, params: Params = None) -> Any | None:
        async with self._connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: Params = None) -> list[Any]:
        async with self._connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    async def execute(self, sql: str, params: Params = None) -> None:
        async with self._connection() as conn:
            await conn.execute(sql, params)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None and self._loop is asyncio.get_running_loop():
            await pool.close()
        self._loop = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled autocommit connection for several statements; returned on exit."""
        async with self._connection() as conn:
            yield conn

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        pool = await self._open_pool()
        try:
            async with pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # The pool has already discarded the broken connection.
            raise DatabaseUnavailable("the database connection was lost") from exc
        except PoolTimeout as exc:
            raise DatabaseUnavailable("no database connection could be made in time") from exc

    async def _open_pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop:
            return self._pool
        # A pool belongs to the loop that opened it; tests and CLI commands may run several.
        self._loop = loop
        self._pool = AsyncConnectionPool(
            self._url,
            min_size=0,
            max_size=self._max_size,
            kwargs={
                "autocommit": True,
                "row_factory": namedtuple_row,
                "connect_timeout": max(1, int(self._connect_timeout_s)),
            },
            timeout=self._connect_timeout_s,
            configure=self._configure,
            open=False,
            name=self._name,
        )
        await self._pool.open()
        return self._pool
