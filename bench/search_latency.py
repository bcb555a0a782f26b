"""Search latency alone, quietly and repeatedly: Garrison's search path against pgvector's own.

bench/retrieval.py measures latency once per query, between a 20-minute load and the filtered
scenarios, on a machine whose load moves; its p50 carries that noise. This one measures only the
unfiltered top-10 search (TARGETS.md R1) on a corpus already stored, in rounds:

- pgvector alone: the statement anyone would write (`ORDER BY embedding <=> q LIMIT 10` over the
  tenant's rows), prepared, on a plain synchronous psycopg connection, at the same `ef_search`;
- Garrison: its `SearchRepository` on the store's search pool, as the service calls it
  (estimate, plan, pooled connection, the statement with documents joined, hits built).

In each round each side searches every query back to back, as a service does; the sides take
turns going first from round to round, so a slow stretch of the machine lands on both. The
report gives each side's p50 / p99 over all rounds, their ratio, and the spread of the per-round
p50s. Recall@10 of both against an exact scan comes last.

    .venv/bin/python -m bench.search_latency --database DIR [--queries 200] [--rounds 5]
        [--ef N[,N...]]

DIR is an embedded Postgres kept by `bench.retrieval` / `bench.issue6 --keep-database DIR`
(a 100k-chunk corpus embedded by the real model); its largest tenant is measured. Queries are
embedded as that run embedded its own: by the in-process MiniLM when the corpus is real (the
default), by the stand-in with `--stand-in`. `--ef` measures at given `ef_search` values instead
of the tenant's calibrated one (both sides use the same).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector

from agent.domain import SearchFilter, SearchQuery
from bench.corpus import StandInEmbedder, query_texts
from bench.retrieval import QUERY_SEED, K, in_process_embedder
from datastore.embedded import EmbeddedPostgres
from datastore.repos.search import SearchRepository
from datastore.settings import DatabaseSettings
from datastore.store import Datastore, open_datastore

PLAIN = (
    "SELECT c.id, c.content, c.embedding <=> %(q)s AS distance FROM chunks c"
    " WHERE c.tenant_id = %(tenant)s ORDER BY c.embedding <=> %(q)s LIMIT %(k)s"
)
EXACT = (
    "SELECT c.id FROM chunks c WHERE c.tenant_id = %(tenant)s"
    " ORDER BY (c.embedding <=> %(q)s) + 0 LIMIT %(k)s"
)


@dataclass
class Side:
    name: str
    latencies: list[float] = field(default_factory=list)
    round_p50s: list[float] = field(default_factory=list)
    found: list[set[int]] = field(default_factory=list)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def measure(
    store: Datastore,
    url: str,
    tenant: uuid.UUID,
    queries: list[list[float]],
    ef: int | None,
    rounds: int,
) -> tuple[int, Side, Side]:
    """(the ef_search both sides used, pgvector, Garrison)."""
    if ef is not None:
        await _set_calibration(url, tenant, ef)
    # A repository of its own: the store's caches the tenant's ef_search for 30 s.
    repo = SearchRepository(store.search_pool)
    warm = await repo.search(SearchQuery(tenant, queries[0], K, None, SearchFilter()))
    used = warm.plan.ef_search
    if used is None:
        raise SystemExit(f"the search did not use the index ({warm.plan.strategy})")
    plain, garrison = Side("pgvector alone"), Side("Garrison search")
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute(f"SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = {used}")
        vectors = [HalfVector(q) for q in queries]
        for q, v in zip(queries[:10], vectors[:10], strict=True):  # warm caches, prepare both
            conn.execute(PLAIN, {"q": v, "tenant": tenant, "k": K}, prepare=True).fetchall()
            await repo.search(SearchQuery(tenant, q, K, None, SearchFilter()))
        for r in range(rounds):
            # Each side searches every query back to back, as a service searches one query
            # after another on one connection; the sides take turns going first, round by
            # round, so a slow stretch of the machine lands on both. (Alternating query by
            # query instead puts both sides' backends on the 2 cores at once: each then
            # wakes cold, and that costs the async side ~0.4 ms more than the sync one.)
            for side in (0, 1) if r % 2 == 0 else (1, 0):
                values = []
                for q, v in zip(queries, vectors, strict=True):
                    started = time.perf_counter()
                    if side == 0:
                        rows = conn.execute(PLAIN, {"q": v, "tenant": tenant, "k": K}, prepare=True)
                        ids = {row[0] for row in rows.fetchall()}
                    else:
                        result = await repo.search(SearchQuery(tenant, q, K, None, SearchFilter()))
                        ids = {h.chunk_id for h in result.hits}
                    values.append((time.perf_counter() - started) * 1000)
                    if r == 0:
                        (plain, garrison)[side].found.append(ids)
                s = (plain, garrison)[side]
                s.latencies += values
                s.round_p50s.append(statistics.median(values))
    return used, plain, garrison


async def _set_calibration(url: str, tenant: uuid.UUID, ef: int) -> None:
    """Make the tenant's searches use `ef` (as a calibration would have stored it)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO search_tuning (tenant_id, ef_search, k, recall, target, sample, source,"
            " chunks, ladder) VALUES (%(t)s, %(ef)s, %(k)s, 0, 0, 0, 'bench', 0, '[]')"
            " ON CONFLICT (tenant_id) DO UPDATE SET ef_search = excluded.ef_search",
            {"t": tenant, "ef": ef, "k": K},
        )


async def _restore(url: str, tenant: uuid.UUID, ef: int | None) -> None:
    if ef is not None:
        await _set_calibration(url, tenant, ef)
        return
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("DELETE FROM search_tuning WHERE tenant_id = %s", (tenant,))


def exact_top(url: str, tenant: uuid.UUID, queries: list[list[float]]) -> list[set[int]]:
    """Each query's true top k, by an exact scan (once: it does not depend on ef_search)."""
    with psycopg.connect(url) as conn:
        register_vector(conn)
        return [
            {r[0] for r in conn.execute(EXACT, {"q": HalfVector(q), "tenant": tenant, "k": K})}
            for q in queries
        ]


def recall(truths: list[set[int]], found: list[set[int]]) -> float:
    return statistics.fmean(len(t & f) / K for t, f in zip(truths, found, strict=True))


async def run(args: argparse.Namespace) -> None:
    embedded = EmbeddedPostgres(args.database)
    url = embedded.start()
    store = await open_datastore(url, DatabaseSettings(database_url=url), upgrade=True)
    try:
        tenant, chunks, stored_ef = await _largest_tenant(url)
        texts = query_texts(args.queries, QUERY_SEED)
        queries = await _embed(texts, stand_in=args.stand_in)
        print(
            f"{chunks:,} chunks in the largest tenant, calibrated ef_search {stored_ef};"
            f" {len(queries)} queries x {args.rounds} rounds, top-{K}"
        )
        print(
            f"{'ef_search':>9}  {'side':<16}{'p50 ms':>8}{'p99 ms':>8}  {'round p50s':<20}"
            f"{'recall@10':>10}"
        )
        truths = exact_top(url, tenant, queries)
        try:
            for ef in args.ef or [None]:
                _report(*await measure(store, url, tenant, queries, ef, args.rounds), truths)
        finally:
            if args.ef:  # leave the tenant as its calibration left it
                await _restore(url, tenant, stored_ef)
    finally:
        await store.close()
        embedded.stop()


def _report(used: int, plain: Side, garrison: Side, truths: list[set[int]]) -> None:
    for side in (plain, garrison):
        spread = f"{min(side.round_p50s):.2f}-{max(side.round_p50s):.2f}"
        print(
            f"{used:>9}  {side.name:<16}{side.quantile(0.5):>8.2f}"
            f"{side.quantile(0.99):>8.2f}  {spread:<20}"
            f"{recall(truths, side.found):>10.3f}"
        )
    ratio = garrison.quantile(0.5) / plain.quantile(0.5)
    overhead = garrison.quantile(0.5) - plain.quantile(0.5)
    print(f"{'':>9}  Garrison / pgvector p50: {ratio:.2f}x ({overhead:+.2f} ms)")


async def _largest_tenant(url: str) -> tuple[uuid.UUID, int, int | None]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT c.tenant_id, count(*), t.ef_search FROM chunks c"
            " LEFT JOIN search_tuning t ON t.tenant_id = c.tenant_id"
            " GROUP BY c.tenant_id, t.ef_search ORDER BY count(*) DESC LIMIT 1"
        )
        row: Any = await cur.fetchone()
    if row is None:
        raise SystemExit("the database holds no chunks: keep one with --keep-database first")
    return row[0], row[1], row[2]


async def _embed(texts: list[str], *, stand_in: bool) -> list[list[float]]:
    if stand_in:
        embedder = StandInEmbedder()
        try:
            return (await embedder.embed(texts)).vectors
        finally:
            embedder.close()
    local = in_process_embedder(required=True)
    assert local is not None
    return (await local.embed(texts)).vectors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", type=Path, required=True, metavar="DIR")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--ef",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="ef_search values to measure at (default: the tenant's calibrated one)",
    )
    parser.add_argument("--stand-in", action="store_true", help="the corpus was stand-in vectors")
    args = parser.parse_args()
    if not (args.database / "postgres").is_dir():
        raise SystemExit(f"{args.database} holds no embedded Postgres (see --keep-database)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
