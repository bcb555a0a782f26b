"""A bulk load's vector index against the real Postgres: built concurrently while the last groups
are embedded when embedding is the slow side, after the load otherwise, and always there and
valid when the load returns, even when the concurrent build failed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest

from agent.runtime import Services
from agent.services.document_input import DocumentInput
from agent.services.documents import DocumentService
from agent.services.ingest import PendingDocument
from agent.settings import AgentSettings
from datastore.schema.documents import HNSW_INDEX
from serving.errors import ModelUnavailable
from serving.types import EmbeddingResult
from tests.conftest import TenantFixture

DOCS = 120
GROUP = 8


def index_valid(url: str) -> bool | None:
    """None when there is no index; else whether Postgres counts it valid."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (HNSW_INDEX,)
        ).fetchone()
    return None if row is None else bool(row[0])


class SlowEmbedder:
    """The real (scripted) embedder behind a CPU model's pace: 20 ms a text."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.texts = 0

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        await asyncio.sleep(0.02 * len(texts))
        result: EmbeddingResult = await self._inner.embed(texts)
        self.texts += len(texts)
        return result


class RecordingStore:
    """The real document store; records each index build and how far embedding was then."""

    def __init__(self, inner: Any, embedder: SlowEmbedder, fail_concurrent: bool) -> None:
        self._inner = inner
        self._embedder = embedder
        self._fail_concurrent = fail_concurrent
        self.builds: list[tuple[bool, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def build_vector_index(self, *, concurrently: bool = False) -> bool:
        self.builds.append((concurrently, self._embedder.texts))
        if concurrently and self._fail_concurrent:
            raise RuntimeError("the concurrent build failed")
        built: bool = await self._inner.build_vector_index(concurrently=concurrently)
        return built


def notes() -> list[PendingDocument]:
    return [
        PendingDocument(f"d{i}", lambda i=i: DocumentInput(f"Note {i} on {uuid.uuid4()}."))  # type: ignore[misc]
        for i in range(DOCS)
    ]


async def slow_load(services: Services, tenant_id: uuid.UUID, *, fail: bool) -> RecordingStore:
    embedder = SlowEmbedder(services.models.embedder())
    store = RecordingStore(services.store.documents, embedder, fail)
    bulk = DocumentService(
        store,
        embedder,
        AgentSettings(bulk_load_min_chunks=10, ingest_group_chunks=GROUP),
    )
    outcomes = await bulk.ingest_many(tenant_id, notes(), expected_chunks=DOCS)
    assert [o.status for o in outcomes] == ["created"] * DOCS
    return store


async def test_a_slow_embedder_hides_the_build_behind_the_last_groups(
    services: Services, acme: TenantFixture, database_url: str
) -> None:
    store = await slow_load(services, acme.tenant.id, fail=False)
    [(concurrently, embedded_then)] = store.builds
    assert concurrently
    assert 64 < embedded_then < DOCS  # late in the load, yet before its last group was embedded
    assert index_valid(database_url) is True
    found = await services.documents.search(acme.tenant.id, "note", k=10)
    assert len(found.result.hits) == 10


async def test_a_failed_concurrent_build_is_done_again_before_the_load_returns(
    services: Services, acme: TenantFixture, database_url: str
) -> None:
    store = await slow_load(services, acme.tenant.id, fail=True)
    assert [c for c, _ in store.builds] == [True, False]
    assert index_valid(database_url) is True


async def test_an_invalid_index_left_by_a_failed_build_is_replaced(
    services: Services, database_url: str
) -> None:
    documents = services.store.documents
    for concurrently in (False, True):
        with psycopg.connect(database_url, autocommit=True) as conn:
            # What an interrupted CREATE INDEX CONCURRENTLY leaves: an index searches ignore.
            conn.execute(
                "UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(%s)",
                (HNSW_INDEX,),
            )
        assert index_valid(database_url) is False
        assert await documents.build_vector_index(concurrently=concurrently)  # was missing
        assert index_valid(database_url) is True
    assert not await documents.build_vector_index()  # a valid index is left as it is


class FailingEmbedder:
    """Answers `good` calls, then fails as an engine that went down does."""

    def __init__(self, inner: Any, good: int) -> None:
        self._inner = inner
        self._good = good

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        if self._good == 0:
            raise ModelUnavailable("the embedding engine is down")
        self._good -= 1
        result: EmbeddingResult = await self._inner.embed(texts)
        return result


async def test_a_model_failing_mid_load_aborts_it_with_its_index_and_earlier_groups_kept(
    services: Services, acme: TenantFixture, database_url: str
) -> None:
    bulk = DocumentService(
        services.store.documents,
        FailingEmbedder(services.models.embedder(), good=3),
        AgentSettings(bulk_load_min_chunks=10, ingest_group_chunks=GROUP),
    )
    with pytest.raises(ModelUnavailable):
        await bulk.ingest_many(acme.tenant.id, notes(), expected_chunks=DOCS)
    stored = await services.documents.list(acme.tenant.id, limit=DOCS)
    # Groups embedded before the failure are committed whole (one commit per group), no more.
    assert len(stored) % GROUP == 0
    assert 0 < len(stored) <= 3 * GROUP
    assert index_valid(database_url) is True


@pytest.mark.parametrize(
    ("group_chunks", "between"),
    [(256, 0), (1, 0), (1, 1)],  # split by the repeated key; by size; a group apart
)
async def test_a_key_given_twice_ends_with_its_last_version_even_when_that_is_the_stored_one(
    services: Services, acme: TenantFixture, group_chunks: int, between: int
) -> None:
    # The second group is looked up only once the first one's commit is in: looked up earlier,
    # "A" would pass for the stored version and be skipped, leaving "B" behind.
    docs = DocumentService(
        services.store.documents,
        services.models.embedder(),
        AgentSettings(ingest_group_chunks=group_chunks),
    )
    await docs.store(acme.tenant.id, DocumentInput("Version A.", key="x"))
    outcomes = await docs.ingest_many(
        acme.tenant.id,
        [
            PendingDocument("b", lambda: DocumentInput("Version B.", key="x")),
            *[PendingDocument("y", lambda: DocumentInput("Other.", key="y"))] * between,
            PendingDocument("a", lambda: DocumentInput("Version A.", key="x")),
        ],
    )
    assert [o.status for o in outcomes] == ["updated"] + ["created"] * between + ["updated"]
    last = outcomes[-1].document
    assert last is not None
    assert last.version == 3
    [chunk] = await docs.chunks(last.id, acme.tenant.id)
    assert chunk.content == "Version A."
