"""Vector, keyword and hybrid search over one tenant's chunks, in one SQL statement per search.

The tenant is a predicate of every query, inside the statement, never a filter applied to
results. Metadata and tag filters select documents (GIN indexes) and chunks by document. How the
vector half runs — HNSW iterative scan or exact scan — is decided per query from the rows in
scope (`search_plan`): for a tenant alone, the planner's estimate from `pg_stats` (cached
briefly); with a filter, the exact sum of the matching documents' chunk counts. The keyword half
ranks `tsvector` matches of any query word; the two lists are fused by reciprocal rank (RRF).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from pgvector import HalfVector
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from sqlalchemy.ext.asyncio import AsyncEngine

from agent.domain import ChunkHit, SearchFilter, SearchPlan, SearchQuery, SearchResult
from datastore.driver import HNSW_EF_SEARCH, HNSW_MAX_SCAN_TUPLES, AsyncPg, raw_connection
from datastore.errors import translated
from datastore.repos.document_writes import check_dim
from datastore.repos.search_plan import PlannerCosts, Strategy, choose_strategy

RRF_K = 60
"""The usual reciprocal-rank-fusion constant: a hit's fused score is sum(1 / (60 + rank))."""
CANDIDATES = 40
"""Rows each half of a search ranks before fusion; also what an index scan must find."""
ESTIMATE_TTL_S = 30.0
SNIPPET_CHARS = 600
MAX_QUERY_WORDS = 32
_WORD = re.compile(r"\w[\w.\-/]*\w|\w")
_HEADLINE = 'MaxFragments=1, MaxWords=40, MinWords=15, StartSel="", StopSel=""'


class SearchRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._costs = PlannerCosts(ef_search=HNSW_EF_SEARCH, max_scan_tuples=HNSW_MAX_SCAN_TUPLES)
        self._estimates: dict[uuid.UUID, tuple[float, float, float]] = {}

    def forget_estimates(self) -> None:
        """Drop cached statistics, e.g. after a bulk load was analysed."""
        self._estimates.clear()

    async def search(self, query: SearchQuery) -> SearchResult:
        check_dim(query.embedding)
        if query.k < 1:
            return SearchResult([], SearchPlan(Strategy.EXACT, 0))
        candidates = max(CANDIDATES, query.k)
        words = keyword_query(query.text) if query.text else None
        params: dict[str, Any] = {
            "tenant": query.tenant_id,
            "q": HalfVector(query.embedding),
            "n": candidates,
            "k": query.k,
            "words": words,
            "rrf": RRF_K,
            "headline": _HEADLINE,
            **_filter_params(query.filter),
        }
        async with translated(), raw_connection(self._engine) as pg:
            in_scope, table_rows = await self._scope(pg, query)
            if in_scope == 0:
                return SearchResult([], SearchPlan(Strategy.EXACT, 0))
            strategy = choose_strategy(in_scope, table_rows, candidates, self._costs)
            plan = SearchPlan(strategy, round(in_scope))
            rows = await _fetch(pg, _statement(strategy, query.filter, words is not None), params)
            found = rows[0]["vector_found"] if rows else 0
            # The index scan gave up before finding rows the estimate says exist: answer exactly.
            if strategy is Strategy.HNSW and found < min(candidates, in_scope):
                plan = SearchPlan(Strategy.EXACT, round(in_scope), fell_back=True)
                rows = await _fetch(
                    pg, _statement(Strategy.EXACT, query.filter, bool(words)), params
                )
        return SearchResult([_hit(r, words is not None) for r in rows], plan)

    async def _scope(self, pg: AsyncPg, query: SearchQuery) -> tuple[float, float]:
        """(rows in scope, rows in the table), from statistics or the documents' chunk counts."""
        cached = self._estimates.get(query.tenant_id)
        if cached is None or cached[2] < time.monotonic():
            # The planner's own estimate: pg_stats' most common values give a tenant's share.
            cur = await pg.execute(
                "EXPLAIN (FORMAT JSON) SELECT 1 FROM chunks c WHERE c.tenant_id = %s",
                (query.tenant_id,),
            )
            plan = _plan_json(await cur.fetchone())
            cur = await pg.execute(
                "SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'chunks'::regclass"
            )
            total = await cur.fetchone()
            expires = time.monotonic() + ESTIMATE_TTL_S
            cached = (float(plan["Plan Rows"]), float(total[0] if total else 0), expires)
            self._estimates[query.tenant_id] = cached
        tenant_rows, table_rows, _ = cached
        table_rows = max(table_rows, tenant_rows)
        if query.filter.empty:
            return tenant_rows, table_rows
        # A filter selects documents; the sum of their chunk counts is exact and cheap to get.
        cur = await pg.execute(
            _COUNT_IN_SCOPE.format(_document_predicate(query.filter)),
            {"tenant": query.tenant_id, **_filter_params(query.filter)},
        )
        row = await cur.fetchone()
        return float(row[0] if row else 0), table_rows


def keyword_query(text: str) -> str | None:
    """The query's words OR-ed for `websearch_to_tsquery`: any word may match, more rank higher.

    Only word characters reach the parser (with inner dots, dashes and slashes, so a product
    code stays one phrase); its operators cannot be injected, and stop words drop out there.
    """
    words = _WORD.findall(text)[:MAX_QUERY_WORDS]
    return " or ".join(words) if words else None


def _filter_params(f: SearchFilter) -> dict[str, Any]:
    return {"tags": list(f.tags), "any_tags": list(f.any_tags), "metadata": Jsonb(f.metadata)}


def _document_predicate(f: SearchFilter) -> sql.Composed:
    parts = [
        sql.SQL(part)
        for part, wanted in (
            (" AND d.tags @> %(tags)s::text[]", f.tags),
            (" AND d.tags && %(any_tags)s::text[]", f.any_tags),
            (" AND d.metadata @> %(metadata)s", f.metadata),
        )
        if wanted
    ]
    return sql.Composed(parts)


_COUNT_IN_SCOPE = sql.SQL(
    "SELECT coalesce(sum(d.chunk_count), 0) FROM documents d WHERE d.tenant_id = %(tenant)s{}"
)
_SCOPE = sql.SQL(
    "c.tenant_id = %(tenant)s AND c.document_id IN "
    "(SELECT d.id FROM documents d WHERE d.tenant_id = %(tenant)s{})"
)
# "+ 0" makes the ordering an expression the HNSW index cannot serve, so Postgres computes every
# distance in scope: the exact scan the plan asked for, whatever the planner would prefer.
_ORDER = {
    Strategy.HNSW: sql.SQL("c.embedding <=> %(q)s"),
    Strategy.EXACT: sql.SQL("(c.embedding <=> %(q)s) + 0"),
}
_VECTOR = sql.SQL("""
    nearest AS MATERIALIZED (
        SELECT c.id, c.embedding <=> %(q)s AS distance FROM chunks c
        WHERE {scope} ORDER BY {order} LIMIT %(n)s),
    vector AS (SELECT id, row_number() OVER (ORDER BY distance, id) AS rank FROM nearest)""")
_KEYWORD = sql.SQL("""
    , words AS (SELECT websearch_to_tsquery('english', %(words)s) AS query),
    matches AS MATERIALIZED (
        SELECT c.id, ts_rank(c.tsv, words.query) AS weight FROM chunks c, words
        WHERE {scope} AND c.tsv @@ words.query ORDER BY weight DESC, c.id LIMIT %(n)s),
    keyword AS (SELECT id, row_number() OVER (ORDER BY weight DESC, id) AS rank FROM matches),
    fused AS (
        SELECT coalesce(v.id, kw.id) AS id, v.rank AS vector_rank, kw.rank AS keyword_rank,
               coalesce(1.0 / (%(rrf)s + v.rank), 0) + coalesce(1.0 / (%(rrf)s + kw.rank), 0)
               AS fused
        FROM vector v FULL JOIN keyword kw ON kw.id = v.id
        ORDER BY fused DESC, id LIMIT %(k)s)""")
_VECTOR_ONLY = sql.SQL("""
    , fused AS (
        SELECT id, rank AS vector_rank, NULL::bigint AS keyword_rank, NULL::numeric AS fused
        FROM vector ORDER BY rank LIMIT %(k)s)""")
_SNIPPET = {
    True: sql.SQL(
        "CASE WHEN f.keyword_rank IS NOT NULL THEN ts_headline('english', c.content, "
        "(SELECT query FROM words), %(headline)s) END"
    ),
    False: sql.SQL("NULL"),
}
_RESULT = sql.SQL("""
    WITH {ctes}
    SELECT c.id, c.document_id, c.ordinal, c.heading, c.content, d.title, d.source, d.version,
           1 - (c.embedding <=> %(q)s) AS similarity, f.fused, f.vector_rank, f.keyword_rank,
           {snippet} AS snippet, (SELECT count(*) FROM nearest) AS vector_found
    FROM fused f JOIN chunks c ON c.id = f.id JOIN documents d ON d.id = c.document_id
    ORDER BY f.fused DESC NULLS LAST, f.vector_rank, c.id""")


def _statement(strategy: Strategy, f: SearchFilter, keyword: bool) -> sql.Composed:
    """The one statement a search runs; every piece is a constant of this module."""
    scope = (
        sql.SQL("c.tenant_id = %(tenant)s") if f.empty else _SCOPE.format(_document_predicate(f))
    )
    ctes: list[sql.Composable] = [_VECTOR.format(scope=scope, order=_ORDER[strategy])]
    ctes.append(_KEYWORD.format(scope=scope) if keyword else _VECTOR_ONLY)
    return _RESULT.format(ctes=sql.Composed(ctes), snippet=_SNIPPET[keyword])


async def _fetch(
    pg: AsyncPg, statement: sql.Composed, params: dict[str, Any]
) -> list[dict[str, Any]]:
    async with pg.cursor(row_factory=dict_row) as cur:
        await cur.execute(statement, params)
        return await cur.fetchall()


def _hit(r: dict[str, Any], hybrid: bool) -> ChunkHit:
    similarity = float(r["similarity"])
    matched = tuple(
        name
        for name, rank in (("vector", r["vector_rank"]), ("keyword", r["keyword_rank"]))
        if rank is not None
    )
    return ChunkHit(
        chunk_id=r["id"],
        document_id=r["document_id"],
        title=r["title"],
        ordinal=r["ordinal"],
        content=r["content"],
        score=float(r["fused"]) if hybrid else similarity,
        similarity=similarity,
        heading=r["heading"],
        source=r["source"],
        document_version=r["version"],
        snippet=r["snippet"] or r["content"][:SNIPPET_CHARS],
        matched_by=matched,
    )


def _plan_json(row: Any) -> dict[str, Any]:
    document = row[0] if row else [{"Plan": {"Plan Rows": 0}}]
    if isinstance(document, str):  # depending on the driver's settings, JSON may arrive as text
        document = json.loads(document)
    plan: dict[str, Any] = document[0]["Plan"]
    return plan
