"""Ingestion and retrieval at 100k chunks x 384 dimensions: targets I1, R1 and R2 of TARGETS.md.

One run ingests a synthetic corpus (bench/corpus.py) through the real pipeline
(`DocumentService.ingest_many`: chunking, batched embedding, COPY BINARY, the bulk-load index
build), then times the real search path (`DocumentStore.search`, vector half) for fresh queries
unfiltered and with metadata filters selecting 1% and 10% of the tenant's chunks. Recall@10 is
measured against an exact scan of the same rows in the same database (index scans disabled).

    .venv/bin/python -m bench.retrieval [--documents 10000] [--queries 200]
        [--in-process | --embed-url URL [--embed-model NAME]]

The default embedder is a stand-in (seeded vectors computed in a worker process, as a model
server would), far faster than any real model: the measured database share is then the share
with embedding (almost) excluded, a worst case, and the table also projects it at the in-process
MiniLM's rate. With --in-process (the appliance's default embedder on the bundled registry) or
--embed-url (an engine), the real model is timed instead and the share is measured, not
projected; use a small --documents (at ~60 texts/s, 100k chunks take ~30 min). The search
figures are only meaningful with the stand-in, whose vectors have the corpus' structure.
Uses GARRISON_DATABASE_URL when set (the database must be disposable), else a throwaway
embedded Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector

from agent.domain import SearchFilter, SearchQuery
from agent.services.documents import DocumentService
from agent.settings import AgentSettings
from bench.corpus import (
    SECTIONS,
    MixtureSpace,
    StandInEmbedder,
    TimedEmbedder,
    TimedStore,
    documents,
    exclusive_seconds,
    union_seconds,
)
from datastore.embedded import EmbeddedPostgres
from datastore.repos.search import SearchRepository
from datastore.repos.search_plan import PlannerCosts
from datastore.settings import DatabaseSettings
from datastore.store import open_datastore
from serving.client import embed_client
from serving.embedders.local import LocalEmbedder
from serving.embedders.settings import EmbedderSettings
from serving.engine.bundled import minilm_dir
from serving.engine.environment import locate
from serving.engine.settings import EngineSettings
from serving.settings import ServingSettings

K = 10
EMBED_TEXTS_PER_S = 60.0
"""The in-process embedder's rate on 2 cores (bench/embedders.py), for projections."""
SCENARIOS: list[tuple[str, dict[str, Any]]] = [
    ("unfiltered (tenant only)", {}),
    ("filtered, 10% selectivity", {"p10": 3}),
    ("filtered, 1% selectivity", {"p1": 7}),
]


async def ingest(args: argparse.Namespace, db_url: str, space: MixtureSpace) -> dict[str, Any]:
    store = await open_datastore(db_url, DatabaseSettings(database_url=db_url), upgrade=True)
    db: dict[str, list[tuple[float, float]]] = {}
    embed: list[tuple[float, float]] = []
    real = None
    if args.embed_url:
        real = embed_client(ServingSettings(embed_url=args.embed_url, embed_model=args.embed_model))
        embedder: Any = TimedEmbedder(real, embed)
    elif args.in_process:
        embedder = TimedEmbedder(_in_process(), embed)
    else:
        embedder = StandInEmbedder(embed)
    try:
        tenant = await store.tenants.create_tenant(f"bench-{uuid.uuid4().hex[:8]}")
        service = DocumentService(TimedStore(store.documents, db), embedder, AgentSettings())
        started = time.perf_counter()
        outcomes = await service.ingest_many(
            tenant.id,
            documents(args.documents),
            expected_chunks=args.documents * SECTIONS,
        )
        wall = time.perf_counter() - started
        chunks = sum(o.document.chunk_count for o in outcomes if o.document is not None)
        failed = [o for o in outcomes if o.status == "failed"]
        if failed:
            raise SystemExit(f"{len(failed)} documents failed, e.g. {failed[0].reason}")
        search = await search_all(args, store, tenant.id, space, db_url)
    finally:
        if real is not None:
            await real.aclose()
        elif not args.in_process:
            embedder.close()
        await store.close()
    all_db = [i for spans in db.values() for i in spans]
    return {
        "wall": wall,
        "chunks": chunks,
        "docs": len(outcomes),
        "embed": union_seconds(embed),
        "db": union_seconds(all_db),
        "db_exclusive": exclusive_seconds(all_db, embed),
        "index": union_seconds(db.get("build_vector_index", [])),
        "writes": union_seconds(db.get("write_documents", [])),
        "search": search,
    }


def _in_process() -> LocalEmbedder:
    """The appliance's default embedder on the bundled registry: MiniLM int8, in this process."""
    engine = EngineSettings()
    source = minilm_dir(locate(engine))
    local = LocalEmbedder(source, engine.models_dir, EmbedderSettings())
    problem = local.check()
    if problem is not None:
        raise SystemExit(problem)
    return local


async def search_all(
    args: argparse.Namespace, store: Any, tenant_id: uuid.UUID, space: MixtureSpace, url: str
) -> list[dict[str, Any]]:
    rnd = random.Random(99)
    queries = [space.draw(rnd) for _ in range(args.queries)]
    forced = {
        "index": SearchRepository(store.engine, PlannerCosts(64, 10**9, visit_cost=1e-9)),
        "exact": SearchRepository(store.engine, PlannerCosts(64, 0)),
    }
    rows = []
    for name, metadata in SCENARIOS:
        scope = SearchFilter(metadata=metadata)
        runs = [(name, store.documents, None)]
        if metadata:  # what the planner chose between, for calibrating its costs
            runs += [(f"  {how} forced", repo, None) for how, repo in forced.items()]
        else:
            runs.append(("  hybrid (vector + keyword)", store.documents, "w0042 SKU-000042-3"))
        for label, repo, text in runs:
            timed = await _timed(repo, tenant_id, queries, scope, text)
            if text is None:
                # Ground truth afterwards, so exact scans never evict the index mid-measurement.
                timed["recall"] = _recall(url, tenant_id, queries, metadata, timed.pop("ids"))
            rows.append({"name": label, **timed})
    return rows


async def _timed(
    repo: Any, tenant_id: uuid.UUID, queries: list[list[float]], scope: SearchFilter, text: Any
) -> dict[str, Any]:
    for q in queries[:10]:  # warm the caches and the estimate the search plans with
        await repo.search(SearchQuery(tenant_id, q, K, text, scope))
    latencies, ids, strategies, short = [], [], dict[str, int](), 0
    for q in queries:
        t0 = time.perf_counter()
        result = await repo.search(SearchQuery(tenant_id, q, K, text, scope))
        latencies.append((time.perf_counter() - t0) * 1000)
        strategies[result.plan.strategy] = strategies.get(result.plan.strategy, 0) + 1
        short += len(result.hits) != K
        ids.append({h.chunk_id for h in result.hits})
    latencies.sort()
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "short": short,
        "strategies": strategies,
        "ids": ids,
        "recall": None,
    }


def _recall(
    url: str, tenant_id: uuid.UUID, queries: list[list[float]], metadata: Any, found: Any
) -> float:
    with psycopg.connect(url) as exact:
        register_vector(exact)
        exact.execute("SET enable_indexscan = off")  # ground truth: every row's distance
        hits = [
            len(_exact(exact, tenant_id, q, metadata) & ids) / K
            for q, ids in zip(queries, found, strict=True)
        ]
    return statistics.mean(hits)


def _exact(conn: Any, tenant_id: uuid.UUID, q: list[float], metadata: dict[str, Any]) -> set[int]:
    scope = ""
    params: list[Any] = [tenant_id]
    if metadata:
        scope = " AND document_id IN (SELECT id FROM documents WHERE metadata @> %s::jsonb)"
        params.append(psycopg.types.json.Jsonb(metadata))
    sql = f"SELECT id FROM chunks WHERE tenant_id = %s{scope} ORDER BY embedding <=> %s LIMIT {K}"
    return {r[0] for r in conn.execute(sql, [*params, HalfVector(q)])}


def report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    per_chunk_db = r["db"] / r["chunks"]
    real = bool(args.embed_url or args.in_process)
    embedder = args.embed_url or ("in-process ONNX MiniLM int8" if args.in_process else None)
    print(f"\ningestion: {r['docs']} documents, {r['chunks']} chunks, embedder: ", end="")
    print(embedder or "stand-in (worker process; embedding costs next to nothing)")
    print(f"{'measure':<58}{'value':>14}")
    lines = [
        ("wall time (s)", f"{r['wall']:.1f}"),
        ("throughput (chunks/s)", f"{r['chunks'] / r['wall']:.0f}"),
        ("embedding (s)", f"{r['embed']:.1f}"),
        ("database, all calls (s)", f"{r['db']:.1f}"),
        ("  of which writes: upserts, COPY, commits (s)", f"{r['writes']:.1f}"),
        ("  of which HNSW index build after the bulk load (s)", f"{r['index']:.1f}"),
        ("database time per 1k chunks (s)", f"{per_chunk_db * 1000:.2f}"),
        ("database share of wall time (busy)", f"{r['db'] / r['wall']:.2%}"),
        ("  not overlapped by embedding (critical path)", f"{r['db_exclusive'] / r['wall']:.2%}"),
    ]
    if not real:
        # Embedding time excluded by the stand-in; what the shares become at a real model's pace.
        embed_s = r["chunks"] / EMBED_TEXTS_PER_S
        exposed = r["db"] - r["writes"]
        lines += [
            (f"at {EMBED_TEXTS_PER_S:.0f} texts/s (in-process MiniLM int8), projected:", ""),
            ("  database busy, share of wall time", f"{r['db'] / (r['db'] + embed_s):.2%}"),
            (
                "  database on the critical path (writes overlapped)",
                f"{exposed / (exposed + embed_s):.2%}",
            ),
        ]
    for name, value in lines:
        print(f"{name:<58}{value:>14}")
    print(f"\nretrieval: top-{K}, {args.queries} queries, recall vs exact scan of the same rows")
    print(f"{'scenario':<28}{'recall@10':>10}{'p50 ms':>9}{'p99 ms':>9}{'short':>7}  plan")
    for row in r["search"]:
        plans = ", ".join(f"{k} {v}" for k, v in sorted(row["strategies"].items()))
        recall = "-" if row["recall"] is None else f"{row['recall']:.3f}"
        print(
            f"{row['name']:<28}{recall:>10}{row['p50']:>9.2f}{row['p99']:>9.2f}"
            f"{row['short']:>7}  {plans}"
        )
    print("(short: queries answered with fewer than k rows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=10_000, help="x10 chunks")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--embed-url", default=None)
    parser.add_argument("--embed-model", default="garrison-embed")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="embed with the in-process ONNX MiniLM (the default on the bundled registry)",
    )
    args = parser.parse_args()
    embedded = None
    db_url = os.environ.get("GARRISON_DATABASE_URL")
    if not db_url:
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="garrison-bench-")))
        db_url = embedded.start()
    try:
        report(args, asyncio.run(ingest(args, db_url, MixtureSpace())))
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
