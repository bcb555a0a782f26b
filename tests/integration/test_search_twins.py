"""Tenant isolation and recall on the index paths, with two tenants holding the same chunks.

Every chunk of acme has a twin in globex: the same text, metadata, tags and embedding. For any
query the nearest rows of the whole table come in pairs, one of each tenant, so a search that let
the other tenant's rows through would return them at once. There are enough twins that the
planner, with its real costs, takes the HNSW index for the tenant alone and the HNSW iterative
scan under a filter: test_search.py's isolation test has one chunk per tenant (an exact scan),
and its filtered test forces the index. Which path ran is read from the result's plan, and
Postgres' own count of scans of the HNSW index checks that the plan tells the truth.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import psycopg

from agent.domain import NewChunk, NewDocument, SearchFilter, SearchQuery, SearchResult
from agent.runtime import Services
from datastore.driver import prepare_for_search
from datastore.engine import create_async
from datastore.fastpath import FastPath
from datastore.repos.documents import DocumentRepository
from datastore.schema.documents import HNSW_INDEX
from tests.conftest import TenantFixture
from tests.integration.test_search import K, chunk_ids, exact_top

TWINS = 4000
"""Chunks per tenant: enough for the planner to take the index even for a hybrid search (20
candidates a half) under a filter keeping a quarter of the tenant, which it does from 3,200."""
CLUSTERS = 32
QUERIES = 20
QUARTER = '{"quarter": 0}'
"""Every fourth document of a tenant, unrelated to where its vector lies."""
CODE = "TW-00012"
"""Document 12's part code (quarter 0), which its twin in globex carries as well."""
COUNTED = "garrison-twin-searches"
"""The application_name of the connections whose index scans are counted."""
WAIT_S = 60.0


@dataclass(frozen=True)
class Path:
    name: str
    metadata: str
    text: str | None

    def query(self, tenant_id: uuid.UUID, q: list[float]) -> SearchQuery:
        scope = SearchFilter(metadata={"quarter": 0} if self.metadata == QUARTER else {})
        return SearchQuery(tenant_id, q, K, self.text, scope)


VECTOR = Path("vector, tenant only", "{}", None)
VECTOR_QUARTER = Path("vector, a quarter of the tenant", QUARTER, None)
HYBRID = Path("hybrid, tenant only", "{}", CODE)
HYBRID_QUARTER = Path("hybrid, a quarter of the tenant", QUARTER, CODE)


def near_clusters(count: int, seed: int) -> list[list[float]]:
    """`count` unit vectors around CLUSTERS fixed centers, as sentence embeddings cluster:
    against uniformly random vectors recall would measure the data more than the search."""
    centers = np.random.default_rng(0).normal(size=(CLUSTERS, 384))
    rng = np.random.default_rng(seed)
    v = centers[rng.integers(CLUSTERS, size=count)] + 0.6 * rng.normal(size=(count, 384))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return [row.tolist() for row in v]


async def plant_twins(services: Services, tenants: list[uuid.UUID]) -> None:
    """The same TWINS one-chunk documents in every tenant, loaded as a bulk load is."""
    docs = [
        NewDocument(
            key=f"twin-{i}",
            title=f"Twin {i}",
            source=None,
            metadata={"quarter": i % 4},
            tags=("twin",),
            content_hash=f"{i:064x}",
            chunks=(NewChunk(0, f"Spare part TW-{i:05d} of the twin catalogue.", v),),
        )
        for i, v in enumerate(near_clusters(TWINS, seed=1))
    ]
    store = services.store.documents
    await store.drop_vector_index()
    for tenant_id in tenants:
        for start in range(0, TWINS, 1000):
            await store.write_documents(tenant_id, docs[start : start + 1000])
    assert await store.build_vector_index()  # built with statistics, as after any bulk load


def _one(url: str, sql: str, value: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql, (value,)).fetchone()
    assert row is not None
    return int(row[0])


async def search_all(
    repo: DocumentRepository, path: Path, tenant_id: uuid.UUID, queries: list[list[float]]
) -> list[SearchResult]:
    return [await repo.search(path.query(tenant_id, q)) for q in queries]


async def hnsw_scans_during(
    url: str, searches: Callable[[DocumentRepository], Awaitable[list[SearchResult]]]
) -> tuple[list[SearchResult], int]:
    """What `searches` found, and the scans of the HNSW index Postgres counted meanwhile.

    They run through the store's own repository on connections of their own, closed afterwards:
    a backend publishes its counters when idle (within seconds) and at the latest as it exits,
    so once those backends are gone their scans are all counted.
    """
    scans = "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s"
    alive = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    before = _one(url, scans, HNSW_INDEX)
    counted = f"{url}{'&' if '?' in url else '?'}application_name={COUNTED}"
    engine = create_async(counted)
    pool = FastPath(counted, configure=prepare_for_search)
    try:
        results = await searches(DocumentRepository(engine, pool))
    finally:
        await pool.close()
        await engine.dispose()
    deadline = time.monotonic() + WAIT_S
    while _one(url, alive, COUNTED) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _one(url, alive, COUNTED) == 0
    return results, _one(url, scans, HNSW_INDEX) - before


def recall(url: str, tenant_id: uuid.UUID, path: Path, q: list[float], got: SearchResult) -> float:
    truth = exact_top(url, tenant_id, q, path.metadata, K)
    return len(set(truth) & {h.chunk_id for h in got.hits}) / K


async def test_twins_in_another_tenant_never_come_back_on_the_index_paths(
    services: Services, acme: TenantFixture, globex: TenantFixture, database_url: str
) -> None:
    await plant_twins(services, [acme.tenant.id, globex.tenant.id])
    theirs = chunk_ids(database_url, globex.tenant.id, "{}")
    assert len(theirs) == TWINS
    queries = near_clusters(QUERIES, seed=2)  # fresh: never stored
    recalls: dict[Path, float] = {}
    for path in (VECTOR, VECTOR_QUARTER, HYBRID, HYBRID_QUARTER):
        allowed = chunk_ids(database_url, acme.tenant.id, path.metadata)
        assert len(allowed) == (TWINS // 4 if path.metadata == QUARTER else TWINS)
        searches = partial(search_all, path=path, tenant_id=acme.tenant.id, queries=queries)
        results, scans = await hnsw_scans_during(database_url, searches)
        for result in results:
            # The planner chose the index, and the scan found every row it needed (no fallback
            # to an exact scan); under a filter, that is the iterative scan.
            assert (result.plan.strategy, result.plan.fell_back) == ("hnsw", False), path
            assert len(result.hits) == K, path
            found = {h.chunk_id for h in result.hits}
            assert not found & theirs, path
            assert found <= allowed, path
            if path.text is not None:
                assert any(CODE in h.content for h in result.hits), path
        # One scan of the index per search, on every path.
        assert scans == QUERIES, path
        if path.text is None:
            # Against an exact scan of the same tenant under the same filter, not a row count.
            recalls[path] = statistics.mean(
                recall(database_url, acme.tenant.id, path, q, r)
                for q, r in zip(queries, results, strict=True)
            )
    assert recalls[VECTOR_QUARTER] >= 0.9
    assert recalls[VECTOR] >= 0.9


async def test_a_filtered_hybrid_search_runs_on_the_index_its_plan_names(
    services: Services, acme: TenantFixture, globex: TenantFixture, database_url: str
) -> None:
    await plant_twins(services, [acme.tenant.id, globex.tenant.id])
    queries = near_clusters(QUERIES, seed=2)
    searches = partial(search_all, path=HYBRID_QUARTER, tenant_id=acme.tenant.id, queries=queries)
    results, scans = await hnsw_scans_during(database_url, searches)
    assert [r.plan.strategy for r in results] == ["hnsw"] * QUERIES
    assert scans == QUERIES
