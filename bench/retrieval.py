"""Ingestion and retrieval at 100k chunks x 384 dimensions: targets I1, R1 and R2 of TARGETS.md.

One run ingests a synthetic corpus (bench/corpus.py) through the real pipeline
(`DocumentService.ingest_many`: chunking, batched embedding, COPY BINARY, the bulk load's index
build), times the real search path (`DocumentStore.search`, vector half) for fresh queries
unfiltered and with metadata filters selecting 1% and 10% of the tenant's chunks, then adds
`--add` documents to the live index. Recall@10 is measured against an exact scan of the same
rows in the same database (index scans disabled), for queries that are chunks of documents the
load never stored, embedded by the load's own embedder (so with the real model too, queries lie
in the space the stored vectors do).

    .venv/bin/python -m bench.retrieval [--documents 10000] [--queries 200] [--add 500]
        [--in-process | --embed-url URL [--embed-model NAME]] [--add-in-process] [--probe 320]

The default embedder is a stand-in (seeded vectors computed in a worker process, as a model
server would), far faster than any real model: the database's share is then measured with
embedding (almost) excluded. The run first probes the appliance's default embedder (in-process
ONNX MiniLM int8) on passages of ingestion's chunk size, and projects the share to that rate
with the pipeline's own rule for when the index is built (bench/ingest_share.py). With
--in-process (that embedder) or --embed-url (an engine) the real model embeds the load and the
share is measured, not projected (at ~100 texts/s, 100k chunks take ~17 min); --add-in-process
does the same for the documents added to the live index only. bench/issue6.py runs the real
embedder through all of it and compares it with a sentence-transformers loop, in one report.
Load averages are printed with each phase: on a shared machine, compare figures of the same run.
Uses GARRISON_DATABASE_URL when set (the database must be disposable), else a throwaway
embedded Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
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
from agent.services.search_tuning import SearchTuning
from agent.settings import AgentSettings
from bench.corpus import (
    SECTIONS,
    StandInEmbedder,
    TimedEmbedder,
    TimedStore,
    chunk_texts,
    documents,
    query_texts,
)
from bench.ingest_share import Phase, Probe, Projection, probe, project_add, project_load
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
QUERY_SEED = 99
"""Documents of this seed give the queries: the load's are seed 11, the probe's 12345."""
CLUSTERED = "  queries from 20 docs (old)"
"""The row of the query set earlier runs used: `chunk_texts`, ten chunks per document."""
PAST_QUESTIONS_SEED = 98
"""Documents of this seed give the questions the calibration measures with."""
SCENARIOS: list[tuple[str, dict[str, Any]]] = [
    ("unfiltered (tenant only)", {}),
    ("filtered, 10% selectivity", {"p10": 3}),
    ("filtered, 1% selectivity", {"p1": 7}),
]


async def ingest(args: argparse.Namespace, db_url: str) -> dict[str, Any]:
    store = await open_datastore(db_url, DatabaseSettings(database_url=db_url), upgrade=True)
    local = (
        in_process_embedder(required=args.in_process or args.add_in_process)
        if (args.in_process or args.add_in_process or args.probe)
        else None
    )
    stand_in: StandInEmbedder | None = None
    real = None
    found: dict[str, Any] = {"load_avg": [_load_avg("start")]}
    try:
        if local is not None and args.probe:
            found["probe"] = await probe(local, args.probe, AgentSettings().ingest_group_chunks)
            found["load_avg"].append(_load_avg("after the probe"))
        if args.embed_url:
            real = embed_client(
                ServingSettings(embed_url=args.embed_url, embed_model=args.embed_model)
            )
        tenant = await store.tenants.create_tenant(f"bench-{uuid.uuid4().hex[:8]}")

        def embedder(use_local: bool, intervals: list[tuple[float, float]]) -> Any:
            nonlocal stand_in
            if real is not None:
                return TimedEmbedder(real, intervals)
            if use_local:
                return TimedEmbedder(local, intervals)
            stand_in = stand_in or StandInEmbedder()
            return TimedEmbedder(stand_in, intervals)

        loader = embedder(args.in_process, [])
        found["load"] = await _phase(store, tenant.id, loader, documents(args.documents))
        found["load_avg"].append(_load_avg("after the load"))
        # What a worker's sweep does within minutes of a load (agent.services.search_tuning):
        # the tenant's ef_search measured with the questions it is asked. A bench tenant has no
        # runs, so chunks of documents of yet another seed stand for its past questions: of
        # the same kind as the measured queries, never the same texts. Its seconds are its own
        # line, not the load's: no ingest waits for it.
        started = time.perf_counter()
        tuning = SearchTuning(store.documents, loader, AgentSettings())
        past = query_texts(AgentSettings().search_tune_sample, PAST_QUESTIONS_SEED)
        calibration = await tuning.calibrate(tenant.id, questions=past)
        found["calibration"] = (calibration, time.perf_counter() - started)
        # Embedded after the load, by the same model: in the stored vectors' space.
        queries = (await loader.embed(query_texts(args.queries, QUERY_SEED))).vectors
        # The query set of earlier runs (chunks of only args.queries / 10 documents), kept
        # beside the new one so that figures stay comparable across runs.
        clustered = (await loader.embed(chunk_texts(args.queries, QUERY_SEED))).vectors
        found["checkpoint"] = checkpoint(db_url)
        found["search"] = await search_all(store, tenant.id, queries, db_url, clustered)
        found["load_avg"].append(_load_avg("after the searches"))
        if args.add:
            added = itertools.islice(documents(args.documents + args.add), args.documents, None)
            found["add"] = await _phase(
                store, tenant.id, embedder(args.add_in_process, []), added, bulk=False
            )
            found["load_avg"].append(_load_avg("after the additions"))
    finally:
        if real is not None:
            await real.aclose()
        if stand_in is not None:
            stand_in.close()
        await store.close()
    return found


async def _phase(
    store: Any, tenant_id: uuid.UUID, embedder: Any, items: Any, *, bulk: bool = True
) -> tuple[Phase, int]:
    """One `ingest_many` over `items`, timed; (summary, documents)."""
    db: dict[str, list[tuple[float, float]]] = {}
    service = DocumentService(TimedStore(store.documents, db), embedder, AgentSettings())
    items = list(items)
    started = time.perf_counter()
    outcomes = await service.ingest_many(
        tenant_id, items, expected_chunks=len(items) * SECTIONS if bulk else 0
    )
    wall = time.perf_counter() - started
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise SystemExit(f"{len(failed)} documents failed, e.g. {failed[0].reason}")
    chunks = sum(o.document.chunk_count for o in outcomes if o.document is not None)
    return Phase.of(chunks, wall, embedder.intervals, db), len(outcomes)


def _load_avg(when: str) -> str:
    one, five, _ = os.getloadavg()
    return f"{when}: {one:.2f} (5 min {five:.2f})"


def in_process_embedder(*, required: bool) -> LocalEmbedder | None:
    """The appliance's default embedder on the bundled registry: MiniLM int8, in this process.
    None, when only the probe wanted it and it is not installed: nothing is projected then."""
    engine = EngineSettings()
    source = minilm_dir(locate(engine))
    local = LocalEmbedder(source, engine.models_dir, EmbedderSettings())
    problem = local.check()
    if problem is not None:
        if required:
            raise SystemExit(problem)
        print(f"no probe, so no projection: {problem}")
        return None
    return local


def checkpoint(url: str) -> float | None:
    """Write the load's dirty pages out now, and return how long that took (None: not allowed).

    After a bulk load the checkpointer spreads ~1 GB of writes over the next minutes
    (checkpoint_completion_target), which is when the searches run: their latency would measure
    the disk's writeback on 2 cores, not the search. A service searches long after its loads."""
    started = time.perf_counter()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        return None
    return time.perf_counter() - started


async def search_all(
    store: Any,
    tenant_id: uuid.UUID,
    queries: list[list[float]],
    url: str,
    clustered: list[list[float]],
) -> list[dict[str, Any]]:
    forced = {
        "index": SearchRepository(store.search_pool, PlannerCosts(64, 10**9, visit_cost=1e-9)),
        "exact": SearchRepository(store.search_pool, PlannerCosts(64, 0)),
    }
    rows = []
    for name, metadata in SCENARIOS:
        scope = SearchFilter(metadata=metadata)
        runs: list[tuple[str, Any, str | None]] = [(name, store.documents, None)]
        if metadata:  # what the planner chose between, for calibrating its costs
            runs += [(f"  {how} forced", repo, None) for how, repo in forced.items()]
        else:
            runs.append(("  hybrid (vector + keyword)", store.documents, "w0042 SKU-000042-3"))
            runs.append((CLUSTERED, store.documents, None))
        for label, repo, text in runs:
            asked = clustered if label == CLUSTERED else queries
            timed = await _timed(repo, tenant_id, asked, scope, text)
            if text is None:
                # Ground truth afterwards, so exact scans never evict the index mid-measurement.
                timed["recall"] = _recall(url, tenant_id, asked, metadata, timed.pop("ids"))
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
    group = AgentSettings().ingest_group_chunks
    found_probe: Probe | None = r.get("probe")
    if found_probe is not None:
        print(
            f"\nin-process ONNX MiniLM int8 alone: {found_probe.prose:.1f} texts/s on ~190-token"
            f" passages, {found_probe.corpus:.1f} on this corpus' chunks ({args.probe} each)"
        )
    load, docs = r["load"]
    _phase_table(
        f"fresh bulk load: {docs} documents, {load.chunks} chunks, embedder: "
        + _embedder_name(args, args.in_process),
        load,
    )
    if "add" in r:
        add, add_docs = r["add"]
        _phase_table(
            f"added to the live {load.chunks}-chunk index: {add_docs} documents, {add.chunks}"
            " chunks, embedder: " + _embedder_name(args, args.add_in_process),
            add,
        )
        if found_probe is not None and not (args.in_process or args.embed_url):
            live = add.writes / add.chunks
            print(f"\nprojected at {found_probe.prose:.1f} texts/s (the probe, ~190-token chunks):")
            _projection("fresh bulk load", project_load(load, live, found_probe.prose, group))
            if not args.add_in_process:
                _projection("added to the live index", project_add(add, found_probe.prose, group))
    calibration, seconds = r["calibration"]
    if calibration is not None:
        print(
            f"\nef_search calibrated in {seconds:.1f} s on {calibration.chunks:,} chunks with"
            f" {calibration.sample} {calibration.source}, target recall@10"
            f" {calibration.target:.2f}: {calibration.ef_search}"
        )
        for m in calibration.ladder:
            print(f"  ef_search {m.ef_search:>4}: recall@10 {m.recall:.3f}, p50 {m.p50_ms:.2f} ms")
    waited = r.get("checkpoint")
    if waited is not None:
        print(f"\nthe load's dirty pages written before the searches: CHECKPOINT {waited:.1f} s")
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
    print("load average " + "; ".join(r["load_avg"]))


def _embedder_name(args: argparse.Namespace, real: bool) -> str:
    if args.embed_url:
        return str(args.embed_url)
    if real:
        return "in-process ONNX MiniLM int8"
    return "stand-in (worker process; embedding costs next to nothing)"


def _phase_table(title: str, p: Phase) -> None:
    print(f"\n{title}\n{'measure':<58}{'value':>14}")
    lines = [
        ("wall time (s)", f"{p.wall:.1f}"),
        ("throughput (chunks/s)", f"{p.chunks / p.wall:.0f}"),
        ("embedding (s)", f"{p.embed:.1f}"),
        ("database, all calls (s)", f"{p.db:.1f}"),
        ("  of which writes: upserts, COPY, commits (s)", f"{p.writes:.1f}"),
        ("  of which lookups of stored versions (s)", f"{p.lookups:.1f}"),
        ("  of which HNSW index build (s)", f"{p.index:.1f}"),
        ("    not overlapped by embedding (s)", f"{p.index_exposed:.1f}"),
        ("database time per 1k chunks (s)", f"{p.db / p.chunks * 1000:.2f}"),
        ("database share of wall time (busy)", f"{p.db / p.wall:.2%}"),
        ("  not overlapped by embedding (critical path)", f"{p.db_exposed / p.wall:.2%}"),
    ]
    # Everything the pipeline spent outside the embedder (database, chunking, waiting): an
    # upper bound on the database's critical path that no interval bookkeeping can flatter.
    lines.append(("wall time outside embedding, share", f"{(p.wall - p.embed) / p.wall:.2%}"))
    for name, value in lines:
        print(f"{name:<58}{value:>14}")


def _projection(title: str, p: Projection) -> None:
    when = "after the load" if p.build_at is None else f"concurrently from row {p.build_at:,}"
    index = f", index built {when}" if title.startswith("fresh") else ""
    print(f"  {title}{index}: wall {p.wall:.0f} s")
    print(f"    {'database busy, share of wall time':<54}{p.busy / p.wall:>14.2%}")
    print(f"    {'database on the critical path':<54}{p.exposed / p.wall:>14.2%}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--documents", type=int, default=10_000, help="x10 chunks")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--embed-url", default=None)
    parser.add_argument("--embed-model", default="garrison-embed")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="embed with the in-process ONNX MiniLM (the default on the bundled registry)",
    )
    parser.add_argument("--add", type=int, default=500, help="documents added to the live index")
    parser.add_argument(
        "--add-in-process",
        action="store_true",
        help="embed only the documents added to the live index with the in-process MiniLM",
    )
    parser.add_argument(
        "--probe", type=int, default=600, help="texts to probe the in-process embedder on; 0: no"
    )
    parser.add_argument(
        "--keep-database",
        type=Path,
        default=None,
        metavar="DIR",
        help="put the embedded Postgres in DIR (new) and keep it, to study the corpus afterwards",
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The whole run, in GARRISON_DATABASE_URL's database or a throwaway embedded Postgres."""
    embedded = None
    db_url = os.environ.get("GARRISON_DATABASE_URL")
    keep: Path | None = args.keep_database
    if keep is not None and keep.exists():
        raise SystemExit(f"--keep-database {keep}: the folder exists; name a new one")
    scratch = keep or Path(tempfile.mkdtemp(prefix="garrison-bench-"))
    try:
        if not db_url:
            embedded = EmbeddedPostgres(scratch)
            db_url = embedded.start()
        return asyncio.run(ingest(args, db_url))
    finally:
        if embedded is not None:
            embedded.stop()
        if keep is None:
            shutil.rmtree(scratch, ignore_errors=True)  # ~0.8 GB after a 100k run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    args = parser.parse_args()
    report(args, measure(args))


if __name__ == "__main__":
    main()
