"""Search against the real Postgres: exactly k under filters, tenants, hybrid keywords, plans."""

from __future__ import annotations

import math
import random
import uuid

import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector

from agent.domain import NewChunk, NewDocument, SearchFilter, SearchQuery
from agent.runtime import Services
from agent.services.search import SearchMode
from datastore.repos.search import SearchRepository
from datastore.repos.search_plan import PlannerCosts
from tests.conftest import TenantFixture

DOCS = 5000
K = 10
ALWAYS_INDEX = PlannerCosts(ef_search=40, max_scan_tuples=10**9, visit_cost=1e-9)
"""Planner costs under which the HNSW index always wins: to test the index path on small data."""


def unit_vector(rnd: random.Random) -> list[float]:
    v = [rnd.gauss(0, 1) for _ in range(384)]
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


async def plant_corpus(services: Services, tenant_id: uuid.UUID, seed: int = 1) -> None:
    """DOCS one-chunk documents; metadata `p1` picks 1% of them, `p10` 10%, tag `even` half.

    Loaded as a bulk load is: the index dropped, rows copied, the index built once after.
    """
    rnd = random.Random(seed)
    docs = [
        NewDocument(
            key=f"doc-{i}",
            title=f"Doc {i}",
            source=None,
            metadata={"p1": i % 100, "p10": i % 10},
            tags=("even",) if i % 2 == 0 else ("odd",),
            content_hash=f"{i:064x}",
            chunks=(NewChunk(0, f"chunk of doc {i}", unit_vector(rnd)),),
        )
        for i in range(DOCS)
    ]
    store = services.store.documents
    await store.drop_vector_index()
    for start in range(0, DOCS, 1000):
        await store.write_documents(tenant_id, docs[start : start + 1000])
    assert await store.build_vector_index()  # it was missing, and is built with statistics


def exact_top(url: str, tenant_id: uuid.UUID, q: list[float], metadata: str, k: int) -> list[int]:
    with psycopg.connect(url) as conn:
        register_vector(conn)
        conn.execute("SET enable_indexscan = off")
        rows = conn.execute(
            "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE c.tenant_id = %s AND d.metadata @> %s::jsonb "
            "ORDER BY c.embedding <=> %s LIMIT %s",
            (tenant_id, metadata, HalfVector(q), k),
        ).fetchall()
    return [r[0] for r in rows]


def chunk_ids(url: str, tenant_id: uuid.UUID, metadata: str = "{}") -> set[int]:
    """The tenant's chunks whose document's metadata contains `metadata`."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE c.tenant_id = %s AND d.metadata @> %s::jsonb",
            (tenant_id, metadata),
        ).fetchall()
    return {r[0] for r in rows}


async def test_filtered_search_returns_exactly_k_at_1_and_10_percent(
    services: Services, acme: TenantFixture, globex: TenantFixture, database_url: str
) -> None:
    await plant_corpus(services, acme.tenant.id)
    await plant_corpus(services, globex.tenant.id, seed=2)  # half the index is someone else's
    q = unit_vector(random.Random(42))
    by_index = SearchRepository(services.store.search_pool, ALWAYS_INDEX)
    for field, value, in_scope in (("p1", 7, DOCS // 100), ("p10", 3, DOCS // 10)):
        scope = SearchFilter(metadata={field: value})
        query = SearchQuery(acme.tenant.id, q, K, filter=scope)
        planned = await services.store.documents.search(query)
        forced = await by_index.search(query)
        # Statistics say these few rows are cheaper to scan exactly; the index path is forced.
        assert planned.plan.strategy == "exact"
        assert planned.plan.estimated_rows == in_scope
        assert (forced.plan.strategy, forced.plan.fell_back) == ("hnsw", False)
        # Globex's documents have the same titles and metadata: only chunk ids tell them apart.
        in_filter = chunk_ids(database_url, acme.tenant.id, f'{{"{field}": {value}}}')
        for result in (planned, forced):
            assert len(result.hits) == K
            titles = [int(h.title.split()[1]) for h in result.hits]
            assert all(getattr_metadata(t, field) == value for t in titles)
            assert {h.chunk_id for h in result.hits} <= in_filter
        truth = exact_top(database_url, acme.tenant.id, q, f'{{"{field}": {value}}}', K)
        assert [h.chunk_id for h in planned.hits] == truth

    # The control: pgvector's default (no iterative scan) stops after ef_search candidates and
    # returns only the few that pass a 1% filter. This is what the iterative scan fixes.
    with psycopg.connect(database_url) as conn:
        register_vector(conn)
        # enable_sort off: only the index can order the rows, so the planner must use it.
        conn.execute(
            "SET hnsw.iterative_scan = off; SET hnsw.ef_search = 40; SET enable_sort = off"
        )
        plain = conn.execute(
            "SELECT c.id FROM chunks c WHERE c.tenant_id = %s AND c.document_id IN "
            "(SELECT id FROM documents WHERE metadata @> '{\"p1\": 7}') "
            "ORDER BY c.embedding <=> %s LIMIT %s",
            (acme.tenant.id, HalfVector(q), K),
        ).fetchall()
    assert len(plain) < K


def getattr_metadata(doc_number: int, field: str) -> int:
    return doc_number % (100 if field == "p1" else 10)


async def test_tag_filters_and_unfiltered_search_return_k(
    services: Services, acme: TenantFixture
) -> None:
    await plant_corpus(services, acme.tenant.id)
    q = unit_vector(random.Random(7))
    repo = services.store.documents
    everything = await repo.search(SearchQuery(acme.tenant.id, q, K))
    assert len(everything.hits) == K
    assert everything.plan.strategy == "hnsw"  # all of a 5000-row table: the index pays
    even = await repo.search(SearchQuery(acme.tenant.id, q, K, filter=SearchFilter(tags=("even",))))
    assert len(even.hits) == K
    assert all(int(h.title.split()[1]) % 2 == 0 for h in even.hits)
    both = SearchFilter(tags=("even", "odd"))  # all of: no document has both
    assert (await repo.search(SearchQuery(acme.tenant.id, q, K, filter=both))).hits == []
    either = SearchFilter(any_tags=("even", "odd"), metadata={"p10": 1})
    hits = (await repo.search(SearchQuery(acme.tenant.id, q, K, filter=either))).hits
    assert len(hits) == K
    assert all(int(h.title.split()[1]) % 10 == 1 for h in hits)


async def test_an_index_scan_that_comes_back_short_is_answered_exactly(
    services: Services, acme: TenantFixture, globex: TenantFixture
) -> None:
    # Statistics gathered while acme held 5000 chunks; then it drops to 2. The stale estimate
    # sends the search to the index, which finds fewer rows than asked: the exact scan answers.
    await plant_corpus(services, acme.tenant.id)
    await plant_corpus(services, globex.tenant.id, seed=2)
    async with services.store.engine.begin() as conn:
        await conn.exec_driver_sql(
            "DELETE FROM documents WHERE tenant_id = %(t)s AND key <> ALL(%(keep)s)",
            {"t": acme.tenant.id, "keep": ["doc-0", "doc-1"]},
        )
    repo = SearchRepository(services.store.search_pool, ALWAYS_INDEX)
    result = await repo.search(SearchQuery(acme.tenant.id, unit_vector(random.Random(3)), 3))
    assert result.plan.estimated_rows > 1000
    assert (result.plan.strategy, result.plan.fell_back) == ("exact", True)
    assert sorted(h.title for h in result.hits) == ["Doc 0", "Doc 1"]


async def test_near_duplicates_in_two_tenants_never_cross(
    services: Services, acme: TenantFixture, globex: TenantFixture
) -> None:
    base = "Project falcon launch code is kept in vault seven, part KX-7741."
    mine = {(await services.documents.ingest(acme.tenant.id, title="Falcon", text=base))[0].id}
    theirs = set()
    for variant in (base, base + " Globex copy.", base.replace("seven", "eight") + " GLX-1"):
        doc, _ = await services.documents.ingest(globex.tenant.id, title="Falcon", text=variant)
        theirs.add(doc.id)
    queries = ["falcon launch code vault", "KX-7741", "GLX-1 Globex copy"]
    for query in queries:
        for mode in SearchMode:
            for scope in (None, SearchFilter(any_tags=()), SearchFilter(metadata={})):
                found = await services.documents.search(
                    acme.tenant.id, query, k=50, filter=scope, mode=mode
                )
                assert {h.document_id for h in found.result.hits} <= mine, (query, mode)
                other = await services.documents.search(globex.tenant.id, query, k=50, mode=mode)
                assert {h.document_id for h in other.result.hits} <= theirs, (query, mode)
    # Globex's own code finds nothing for acme, even by keyword.
    only_theirs = await services.documents.search(acme.tenant.id, "GLX-1", k=5)
    assert all("GLX-1" not in h.content for h in only_theirs.result.hits)


async def test_hybrid_finds_an_exact_product_code_that_vector_search_misses(
    services: Services, acme: TenantFixture
) -> None:
    # Distractors share every word of the query but the code; the one part that has the code
    # says little else the query says. Embeddings rank the distractors first.
    for n, code in enumerate(["XK-4471-C", "XK-4472-B", "XK-4417-B", "XK-4470-B", "XK-4471-D"]):
        await services.documents.ingest(
            acme.tenant.id,
            title=f"Warranty {n}",
            text=f"Warranty terms and return policy for part {code}: two years warranty terms.",
        )
    target, _ = await services.documents.ingest(
        acme.tenant.id,
        title="Discontinued parts",
        text="Spare part XK-4471-B was discontinued in May; order the successor model instead.",
    )
    query = "warranty terms for part XK-4471-B"
    vector = await services.documents.search(acme.tenant.id, query, k=3, mode=SearchMode.VECTOR)
    hybrid = await services.documents.search(acme.tenant.id, query, k=3)
    assert target.id not in {h.document_id for h in vector.result.hits}
    first = hybrid.result.hits[0]
    assert first.document_id == target.id
    assert "keyword" in first.matched_by
    assert "XK-4471-B" in first.snippet
    assert len(hybrid.result.hits) == 3
    # Results say where they came from: document, version, chunk, both scores.
    assert first.document_version == 1
    assert first.similarity is not None
    assert first.score > 0


async def test_search_tool_applies_filters_and_records_what_it_retrieved(
    services: Services, acme: TenantFixture
) -> None:
    stored = {}
    for owner in ("hr", "finance"):
        stored[owner], _ = await services.documents.ingest(
            acme.tenant.id,
            title=f"{owner} travel",
            text=f"The {owner} travel policy: trains under four hours.",
            metadata={"owner": owner},
            tags=("internal",),
        )
    from agent.tools.base import ToolContext
    from agent.tools.search_documents import SearchArgs, SearchDocuments

    ctx = ToolContext(
        acme.tenant.id, uuid.uuid4(), 1, services.store.documents, services.models.embedder()
    )
    tool = SearchDocuments()
    args = tool.validate(
        {"query": "travel policy", "k": 5, "tags": ["internal"], "where": ["owner=hr"]}
    )
    assert isinstance(args, SearchArgs)
    result = await tool.run(args, ctx)
    hits = result.data["hits"]
    assert [h["title"] for h in hits] == ["hr travel"]
    assert set(hits[0]) >= {"chunk_id", "document_id", "document_version", "score", "snippet"}
    # What it records is the stored chunk it retrieved, not a copy that merely looks alike.
    hr = stored["hr"]
    assert hits[0]["document_id"] == str(hr.id)
    chunks = await services.store.documents.list_chunks(hr.id, acme.tenant.id, 10)
    assert hits[0]["chunk_id"] in {c.id for c in chunks}
    assert result.data["search"] == {"strategy": "exact", "estimated_rows": 1}
    # The query's embedding cost: the scripted model counts a token a word ("travel policy").
    assert result.prompt_tokens == 2
