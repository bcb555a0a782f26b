"""Vector, keyword and hybrid search over one tenant's chunks, in one SQL statement per search.

The tenant is a predicate of every query, inside the statement, never a filter applied to
results; so is a restricted caller's scope (`SearchFilter.access_tags`). Metadata and tag
filters select documents (GIN indexes) and chunks by document. How the
vector half runs — HNSW iterative scan or exact scan — is decided per query from the rows in
scope (`search_plan`): for a tenant alone, the planner's estimate from `pg_stats` (cached
briefly); with a filter, the exact sum of the matching documents' chunk counts. An index scan
keeps the tenant's calibrated number of candidates (`search_tuning`, cached with the estimate;
the default `HNSW_EF_SEARCH` until the tenant is measured). The keyword half
ranks `tsvector` matches of the query's identifiers (else its words); the two lists are fused by
reciprocal rank (RRF). The SQL itself is `search_sql`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from pgvector import HalfVector
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from agent.domain import ChunkHit, SearchFilter, SearchPlan, SearchQuery, SearchResult
from datastore.driver import (
    HNSW_EF_SEARCH,
    HNSW_MAX_SCAN_TUPLES,
    AsyncPg,
    use_ef_search,
)
from datastore.errors import translated
from datastore.fastpath import FastPath
from datastore.repos.document_writes import check_dim
from datastore.repos.search_plan import PlannerCosts, Strategy, choose_strategy
from datastore.repos.search_sql import COUNT_IN_SCOPE, document_predicate, keyword_query, statement
from datastore.repos.search_tuning import ef_for_rows

RRF_K = 60
"""The usual reciprocal-rank-fusion constant: a hit's fused score is sum(1 / (60 + rank))."""
HYBRID_POOL = 20
"""Rows each half of a hybrid search ranks before fusion (at least k)."""
ESTIMATE_TTL_S = 30.0
SNIPPET_CHARS = 600
_HEADLINE = 'MaxFragments=1, MaxWords=40, MinWords=15, StartSel="", StopSel=""'


class SearchRepository:
    def __init__(self, connections: FastPath, costs: PlannerCosts | None = None) -> None:
        self._connections = connections
        self._costs = costs or PlannerCosts(HNSW_EF_SEARCH, HNSW_MAX_SCAN_TUPLES)
        self._estimates: dict[uuid.UUID, _Estimate] = {}

    def forget_estimates(self) -> None:
        """Drop cached statistics, e.g. after a bulk load was analysed."""
        self._estimates.clear()

    async def search(self, query: SearchQuery) -> SearchResult:
        check_dim(query.embedding)
        if query.k < 1:
            return SearchResult([], SearchPlan(Strategy.EXACT, 0))
        words = keyword_query(query.text) if query.text else None
        hybrid = words is not None
        # Vector search ranks exactly k; hybrid gives each half a larger pool to fuse.
        candidates = max(HYBRID_POOL, query.k) if hybrid else query.k
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
        # Its own pool of autocommit connections: no pre-ping round trip, no transaction to
        # begin or roll back, no SQLAlchemy checkout; ~0.3 ms of a ~2 ms search.
        async with translated(), self._connections.connection() as pg:
            in_scope, estimate = await self._scope(pg, query)
            if in_scope == 0:
                return SearchResult([], SearchPlan(Strategy.EXACT, 0))
            # The tenant's value is for its calibrated top k; more rows asked keep more.
            ef = ef_for_rows(estimate.ef_search or self._costs.ef_search, candidates, estimate.k)
            costs = replace(self._costs, ef_search=ef)
            strategy = choose_strategy(in_scope, estimate.table_rows, candidates, costs)
            plan = SearchPlan(strategy, round(in_scope))
            if strategy is Strategy.HNSW:
                await use_ef_search(pg, ef)
                plan = replace(plan, ef_search=ef)
            # A filter's selectivity is what the chosen strategy relies on, and a generic plan
            # (which psycopg's prepared statements reach after ten runs) cannot see it: it may
            # scan the filtered rows exactly while the result says hnsw. Filtered statements
            # are planned for their own values each time; unfiltered ones stay prepared.
            prepare = None if query.filter.empty else False
            rows = await _fetch(pg, statement(strategy, query.filter, hybrid), params, prepare)
            found = rows[0]["vector_found"] if hybrid and rows else len(rows)
            # The index scan gave up before finding rows the estimate says exist: answer exactly.
            if strategy is Strategy.HNSW and found < min(candidates, in_scope):
                plan = SearchPlan(Strategy.EXACT, round(in_scope), fell_back=True)
                exact = statement(Strategy.EXACT, query.filter, hybrid)
                rows = await _fetch(pg, exact, params, prepare)
        return SearchResult([_hit(r, hybrid) for r in rows], plan)

    async def _scope(self, pg: AsyncPg, query: SearchQuery) -> tuple[float, _Estimate]:
        """(rows in scope, the tenant's estimate): from statistics or the documents' chunk
        counts, and the tenant's calibrated `ef_search`."""
        cached = self._estimates.get(query.tenant_id)
        if cached is None or cached.expires < time.monotonic():
            # The planner's own estimate: pg_stats' most common values give a tenant's share.
            cur = await pg.execute(
                "EXPLAIN (FORMAT JSON) SELECT 1 FROM chunks c WHERE c.tenant_id = %s",
                (query.tenant_id,),
            )
            plan = _plan_json(await cur.fetchone())
            cur = await pg.execute(_TABLE_AND_TUNING, (query.tenant_id,))
            found = await cur.fetchone()
            tenant_rows = float(plan["Plan Rows"])
            cached = _Estimate(
                tenant_rows,
                max(tenant_rows, float(found[0] if found else 0)),
                found[1] if found else None,
                found[2] if found and found[2] is not None else CALIBRATED_K,
                time.monotonic() + ESTIMATE_TTL_S,
            )
            self._estimates[query.tenant_id] = cached
        if query.filter.empty:
            return cached.tenant_rows, cached
        # A filter selects documents; the sum of their chunk counts is exact and cheap to get.
        cur = await pg.execute(
            COUNT_IN_SCOPE.format(document_predicate(query.filter)),
            {"tenant": query.tenant_id, **_filter_params(query.filter)},
        )
        row = await cur.fetchone()
        return float(row[0] if row else 0), cached


_TABLE_AND_TUNING = (
    "SELECT greatest(reltuples, 0), t.ef_search, t.k FROM pg_class"
    " LEFT JOIN search_tuning t ON t.tenant_id = %s WHERE pg_class.oid = 'chunks'::regclass"
)
CALIBRATED_K = 10
"""The rows per search the default `ef_search` is meant for (an uncalibrated tenant's k)."""


@dataclass(frozen=True, slots=True)
class _Estimate:
    """What a tenant's searches plan with, refreshed every ESTIMATE_TTL_S."""

    tenant_rows: float
    table_rows: float
    ef_search: int | None
    """Calibrated for the tenant; None until it is measured."""
    k: int
    """The rows per search `ef_search` was calibrated for."""
    expires: float


def _filter_params(f: SearchFilter) -> dict[str, Any]:
    return {
        "tags": list(f.tags),
        "any_tags": list(f.any_tags),
        "metadata": Jsonb(f.metadata),
        "access_tags": list(f.access_tags or ()),
    }


async def _fetch(
    pg: AsyncPg, statement: sql.Composed, params: dict[str, Any], prepare: bool | None
) -> list[dict[str, Any]]:
    async with pg.cursor(row_factory=dict_row) as cur:
        await cur.execute(statement, params, prepare=prepare)
        return await cur.fetchall()


def _hit(r: dict[str, Any], hybrid: bool) -> ChunkHit:
    similarity = float(r["similarity"])
    matched: tuple[str, ...] = ("vector",)
    if hybrid:
        ranks = (("vector", r["vector_rank"]), ("keyword", r["keyword_rank"]))
        matched = tuple(name for name, rank in ranks if rank is not None)
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
