"""Ingestion against the real Postgres: idempotence, versions, atomic replacement, bulk loads."""

from __future__ import annotations

import asyncio
import uuid

import psycopg

from agent.domain import NewChunk, NewDocument, WriteStatus
from agent.formats import DocumentFormat
from agent.runtime import Services
from agent.services.document_input import DocumentInput
from agent.services.documents import DocumentService
from agent.services.ingest import IngestProgress, PendingDocument
from agent.settings import AgentSettings
from datastore.schema.documents import HNSW_INDEX
from serving.testing.scripted import ScriptedModelServer, deterministic_embedding
from tests.conftest import TenantFixture

HANDBOOK = "# Handbook\n\n## Leave\n\nWe get 27 days.\n\n## Pay\n\nPaid monthly.\n"


def embed_calls(model: ScriptedModelServer) -> int:
    return sum(1 for r in model.requests if r.path.endswith("/embeddings"))


def count_rows(url: str, sql: str, *args: object) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, args).fetchone()
    assert row is not None
    return int(row[0])


async def test_reingesting_an_unchanged_document_changes_nothing(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    docs = services.documents
    first = DocumentInput(HANDBOOK, format=DocumentFormat.MARKDOWN, source="file:///hb.md")
    created = await docs.store(acme.tenant.id, first)
    assert created.status == "created"
    assert created.document is not None
    before = await docs.chunks(created.document.id, acme.tenant.id)
    calls = embed_calls(scripted_model)

    again = await docs.store(acme.tenant.id, first)
    assert again.status == "unchanged"
    assert again.document == created.document  # same version, same timestamps
    assert await docs.chunks(created.document.id, acme.tenant.id) == before
    assert embed_calls(scripted_model) == calls  # recognised before any model time was spent
    assert [c.heading for c in before] == ["Handbook > Leave", "Handbook > Pay"]


async def test_a_changed_document_is_a_new_version_with_new_chunks(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer, database_url: str
) -> None:
    docs = services.documents
    v1 = await docs.store(acme.tenant.id, DocumentInput(HANDBOOK, key="hb"))
    assert v1.document is not None
    old = {c.id for c in await docs.chunks(v1.document.id, acme.tenant.id)}

    changed = HANDBOOK.replace("27 days", "30 days")
    v2 = await docs.store(acme.tenant.id, DocumentInput(changed, key="hb"))
    assert v2.status == "updated"
    assert v2.document is not None
    assert (v2.document.id, v2.document.version) == (v1.document.id, 2)
    new = await docs.chunks(v1.document.id, acme.tenant.id)
    assert not old & {c.id for c in new}
    assert any("30 days" in c.content for c in new)
    stale = "SELECT count(*) FROM chunks WHERE content LIKE %s"
    assert count_rows(database_url, stale, "%27 days%") == 0

    # Labels only: a new version, but the chunks (and their embeddings) stay.
    calls = embed_calls(scripted_model)
    v3 = await docs.store(
        acme.tenant.id, DocumentInput(changed, key="hb", tags=("hr",), metadata={"owner": "hr"})
    )
    assert (v3.status, v3.document and v3.document.version) == ("updated", 3)
    assert [c.id for c in await docs.chunks(v1.document.id, acme.tenant.id)] == [c.id for c in new]
    assert embed_calls(scripted_model) == calls
    found = await docs.search(acme.tenant.id, "days of leave", k=5)
    assert {h.document_version for h in found.result.hits} == {3}


def version_of(marker: str, chunks: int) -> NewDocument:
    return NewDocument(
        key="contract",
        title="Contract",
        source=None,
        metadata={},
        tags=(),
        content_hash=marker * 64,
        chunks=tuple(
            NewChunk(i, f"version {marker} clause {i}", deterministic_embedding(f"clause {i}"))
            for i in range(chunks)
        ),
    )


async def test_a_concurrent_reader_sees_the_old_or_the_new_version_never_a_mix(
    services: Services, acme: TenantFixture
) -> None:
    store = services.store.documents
    chunks = 60
    [first] = await store.write_documents(acme.tenant.id, [version_of("a", chunks)])
    doc_id = first.document.id
    writes_done = asyncio.Event()
    seen: list[set[str]] = []

    async def writer() -> None:
        try:
            for n in range(20):
                [w] = await store.write_documents(acme.tenant.id, [version_of("ba"[n % 2], chunks)])
                assert w.status is WriteStatus.UPDATED
                await asyncio.sleep(0)
        finally:
            writes_done.set()

    async def reader() -> None:
        query = deterministic_embedding("clause")
        while not writes_done.is_set():
            listed = await store.list_chunks(doc_id, acme.tenant.id, 1000)
            found = await services.store.documents.search_chunks(acme.tenant.id, query, 100)
            for contents in ([c.content for c in listed], [h.content for h in found]):
                assert len(contents) == chunks
                seen.append({text.split()[1] for text in contents})

    async with asyncio.TaskGroup() as group:  # a failure cancels the others, which clean up
        for task in (writer(), reader(), reader()):
            group.create_task(task)
    assert all(len(markers) == 1 for markers in seen), [m for m in seen if len(m) > 1][:3]
    # The readers really did run across the replacements: both versions were observed.
    assert {m for markers in seen for m in markers} == {"a", "b"}


async def test_deleting_a_document_removes_its_chunks(
    services: Services, acme: TenantFixture, database_url: str
) -> None:
    doc, _ = await services.documents.ingest(acme.tenant.id, title="Gone", text=HANDBOOK)
    assert count_rows(database_url, "SELECT count(*) FROM chunks WHERE document_id = %s", doc.id)
    deleted = await services.documents.delete(doc.id, acme.tenant.id)
    assert deleted.id == doc.id
    assert not count_rows(
        database_url, "SELECT count(*) FROM chunks WHERE document_id = %s", doc.id
    )
    assert (await services.documents.search(acme.tenant.id, "27 days", k=5)).result.hits == []


async def test_a_batch_reports_bad_documents_and_stores_the_rest_in_input_order(
    services: Services, acme: TenantFixture
) -> None:
    def bad_html() -> DocumentInput:
        return DocumentInput("<html><script>x()</script></html>", format=DocumentFormat.HTML)

    items = [
        PendingDocument("a", lambda: DocumentInput("Alpha text.", key="k1")),
        PendingDocument("bad-html", bad_html),
        PendingDocument("b", lambda: DocumentInput("Beta text.", key="k2")),
        PendingDocument("a-again", lambda: DocumentInput("Alpha text, changed.", key="k1")),
        PendingDocument("big-meta", lambda: DocumentInput("x", metadata={"m": "m" * 20_000})),
    ]
    states: list[IngestProgress] = []
    outcomes = await services.documents.ingest_many(acme.tenant.id, items, progress=states.append)
    assert [(o.label, o.status) for o in outcomes] == [
        ("a", "created"),
        ("bad-html", "failed"),
        ("b", "created"),
        ("a-again", "updated"),  # the same key later in one batch: its next version
        ("big-meta", "failed"),
    ]
    assert outcomes[1].reason == "the HTML has no visible text"
    assert outcomes[4].reason == "metadata is larger than 16384 bytes"
    assert outcomes[3].document is not None
    assert outcomes[3].document.version == 2
    assert states[-1].documents == 5
    assert states[-1].failed == 2
    assert sum(len(s.latest) for s in states) == 5


def index_exists(url: str) -> bool:
    return bool(count_rows(url, "SELECT count(*) FROM pg_indexes WHERE indexname = %s", HNSW_INDEX))


async def test_a_bulk_load_builds_the_vector_index_once_at_the_end(
    services: Services, acme: TenantFixture, database_url: str
) -> None:
    bulk = DocumentService(
        services.store.documents,
        services.models.embedder(),
        AgentSettings(bulk_load_min_chunks=10, ingest_group_chunks=4),
    )
    during: list[bool] = []
    items = [
        PendingDocument(f"d{i}", lambda i=i: DocumentInput(f"Note {i} on {uuid.uuid4()}."))  # type: ignore[misc]
        for i in range(12)
    ]
    outcomes = await bulk.ingest_many(
        acme.tenant.id,
        items,
        expected_chunks=12,
        progress=lambda _state: during.append(index_exists(database_url)),
    )
    assert [o.status for o in outcomes] == ["created"] * 12
    assert during
    assert not any(during)  # no index to grow row by row while loading
    assert index_exists(database_url)
    found = await services.documents.search(acme.tenant.id, "note", k=12)
    assert len(found.result.hits) == 12

    # A small load into a table larger than itself keeps the index and grows it.
    during.clear()
    await bulk.ingest_many(
        acme.tenant.id,
        [PendingDocument("one", lambda: DocumentInput("One more note."))],
        expected_chunks=11,
        progress=lambda _state: during.append(index_exists(database_url)),
    )
    assert during == [True]
