"""The psycopg connection under SQLAlchemy, for what Core cannot express at database speed.

Bulk writes use COPY in binary format and vector search is one hand-written statement, both on
the raw `psycopg.AsyncConnection` of a pooled SQLAlchemy connection (same pool, same limits).
Each connection is prepared once: pgvector's types registered (binary `halfvec` for COPY and
query parameters) and the HNSW session settings made, then committed, because a SET inside a
transaction that is rolled back, as the pool does on every return, would be undone.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from pgvector.psycopg import register_vector_async
from sqlalchemy.ext.asyncio import AsyncEngine

HNSW_EF_SEARCH = 64
"""Candidates the HNSW scan keeps for a tenant not calibrated yet (`repos.search_tuning`)."""
HNSW_MAX_SCAN_TUPLES = 20_000
"""pgvector's default cap on tuples an iterative scan visits; the search planner respects it."""

_SESSION = (
    # Relaxed order: the index returns candidates roughly by distance and keeps scanning until
    # the query's LIMIT is met after filtering; the search re-sorts its candidates exactly.
    f"SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = {HNSW_EF_SEARCH};"
    f" SET hnsw.max_scan_tuples = {HNSW_MAX_SCAN_TUPLES}"
)

AsyncPg = psycopg.AsyncConnection[Any]

_EF_SEARCH: weakref.WeakKeyDictionary[AsyncPg, int] = weakref.WeakKeyDictionary()
"""Each prepared connection's `hnsw.ef_search` where it is not the default of `_SESSION`."""


@asynccontextmanager
async def raw_connection(engine: AsyncEngine) -> AsyncIterator[AsyncPg]:
    """A pooled connection's psycopg connection, prepared for vectors, outside any transaction.

    The caller commits what it writes (`async with conn.transaction()`); whatever is left open
    is rolled back when the connection returns to the pool.
    """
    async with engine.connect() as conn:
        fairy = await conn.get_raw_connection()
        pg = fairy.driver_connection
        if not isinstance(pg, psycopg.AsyncConnection):
            raise TypeError("the engine's driver is not psycopg (async)")
        if pg.adapters.types.get("halfvec") is None:
            await register_vector_async(pg)
            await pg.execute(_SESSION)
            await pg.commit()
        yield pg


async def use_ef_search(pg: AsyncPg, ef_search: int) -> None:
    """Make the connection's HNSW scans keep `ef_search` candidates.

    One SET when the value differs from the connection's, none otherwise: tenants calibrated to
    the same value, or one tenant's searches in a row, pay nothing. Call it in autocommit (as a
    search reads): a SET inside a transaction would be undone by the pool's rollback while this
    record of it stayed.
    """
    if _EF_SEARCH.get(pg, HNSW_EF_SEARCH) != ef_search:
        await pg.execute(f"SET hnsw.ef_search = {int(ef_search)}")
        _EF_SEARCH[pg] = ef_search


async def prepare_for_search(pg: AsyncPg) -> None:
    """A new autocommit connection of the search pool, made ready once: pgvector's types and
    the HNSW session settings (kept for the connection's life: nothing rolls them back)."""
    await register_vector_async(pg)
    await pg.execute(_SESSION)
