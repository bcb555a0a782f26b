"""Re-embedding stored chunks after the embedding model changed, against the real Postgres.

Documents are ingested with a stand-in "previous model" (the scripted embedding rotated, so its
vectors are unrelated to the current model's); `reembed` then gives every chunk the current
model's vector of exactly what ingestion embeds, in batches, one commit per document, inside the
tenant asked for, and leaves alone a document whose content changed meanwhile.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence

import psycopg
from pgvector.psycopg import register_vector

from agent.domain import Document
from agent.runtime import Services
from agent.services.document_input import DocumentInput, embedding_input
from agent.services.documents import DocumentService
from agent.services.reembed import Reembedder, ReembedProgress
from agent.services.search import SearchMode
from agent.settings import AgentSettings
from serving.testing.scripted import ScriptedModelServer, deterministic_embedding
from serving.types import EmbeddingResult, Usage
from tests.conftest import TenantFixture

HANDBOOK = "# Handbook\n\n## Leave\n\nWe get 27 days of annual leave.\n\n## Pay\n\nPaid monthly.\n"
EXPENSES = "# Expenses\n\nHotels up to EUR 160 a night; taxis up to EUR 60 per journey.\n"


class PreviousModel:
    """The embedder the chunks were stored with before the model changed."""

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        vectors = [_rotated(deterministic_embedding(t)) for t in texts]
        return EmbeddingResult(vectors, Usage(0, 0), 0.0, "previous")


def _rotated(v: list[float]) -> list[float]:
    return v[7:] + v[:7]


def stored_vectors(url: str, document_id: uuid.UUID) -> dict[int, list[float]]:
    with psycopg.connect(url) as conn:
        register_vector(conn)
        rows = conn.execute(
            "SELECT id, embedding FROM chunks WHERE document_id = %s", (document_id,)
        ).fetchall()
    return {r[0]: r[1].to_list() for r in rows}


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


async def ingest_with_previous_model(services: Services, tenant: TenantFixture) -> list[Document]:
    old = DocumentService(services.store.documents, PreviousModel(), AgentSettings())
    docs = []
    for key, text in (("handbook", HANDBOOK), ("expenses", EXPENSES)):
        outcome = await old.store(tenant.tenant.id, DocumentInput(text, key=key))
        assert outcome.document is not None
        docs.append(outcome.document)
    return docs


async def test_reembedding_gives_every_chunk_the_current_models_vector(
    services: Services, acme: TenantFixture, database_url: str
) -> None:
    docs = await ingest_with_previous_model(services, acme)
    query = "how many days of annual leave"
    before = await services.documents.search(acme.tenant.id, query, mode=SearchMode.VECTOR, k=1)
    assert before.result.hits[0].similarity < 0.2  # the old vectors match nothing well

    seen: list[ReembedProgress] = []
    report = await services.documents.reembed(acme.tenant.id, seen.append)

    chunks = sum(d.chunk_count for d in docs)
    assert (report.documents, report.skipped, report.chunks) == (2, 0, chunks)
    assert report.model == "embed"  # the deployment of the embed role that answered
    assert seen
    assert seen[-1].chunks == chunks
    for doc in docs:
        stored = await services.documents.chunks(doc.id, acme.tenant.id)
        vectors = stored_vectors(database_url, doc.id)
        for c in stored:
            expected = deterministic_embedding(embedding_input(doc.title, c.heading, c.content))
            assert cosine(vectors[c.id], expected) > 0.999  # halfvec rounding only
    after = await services.documents.search(acme.tenant.id, query, mode=SearchMode.VECTOR, k=1)
    assert after.result.hits[0].heading == "Handbook > Leave"
    assert after.result.hits[0].similarity > 0.5
    # Nothing else about the documents changed: same version, same chunks.
    assert [await services.documents.get(d.id, acme.tenant.id) for d in docs] == docs


async def test_reembedding_one_tenant_leaves_the_others_alone(
    services: Services, acme: TenantFixture, globex: TenantFixture, database_url: str
) -> None:
    await ingest_with_previous_model(services, acme)
    theirs = await ingest_with_previous_model(services, globex)
    untouched = {d.id: stored_vectors(database_url, d.id) for d in theirs}

    report = await services.documents.reembed(acme.tenant.id)
    assert report.documents == 2
    assert {d.id: stored_vectors(database_url, d.id) for d in theirs} == untouched

    everyone = await services.documents.reembed(None)
    assert everyone.documents == 4
    assert {d.id: stored_vectors(database_url, d.id) for d in theirs} != untouched


async def test_chunks_are_embedded_in_batches_of_whole_documents(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    docs = await ingest_with_previous_model(services, acme)
    sizes = sorted(d.chunk_count for d in docs)
    assert sizes == [1, 2]

    def batches() -> list[int]:
        return [
            len(r.body["input"])
            for r in scripted_model.requests
            if r.path.endswith("/embeddings") and r.body is not None
        ]

    # A group closes once it holds `ingest_group_chunks` chunks; a document is never split.
    one = Reembedder(
        services.store.documents, services.models.embedder(), AgentSettings(ingest_group_chunks=1)
    )
    assert (await one.run(acme.tenant.id)).chunks == 3
    assert sorted(batches()) == [1, 2]
    scripted_model.requests.clear()
    many = Reembedder(
        services.store.documents, services.models.embedder(), AgentSettings(ingest_group_chunks=50)
    )
    assert (await many.run(acme.tenant.id)).chunks == 3
    assert batches() == [3]


async def test_a_document_replaced_meanwhile_is_left_as_it_is(
    services: Services, acme: TenantFixture, database_url: str
) -> None:
    handbook, _ = await ingest_with_previous_model(services, acme)
    store = services.store.documents
    stored = await services.documents.chunks(handbook.id, acme.tenant.id)
    stale = {c.id: deterministic_embedding(c.content) for c in stored}

    # Re-ingested with other content between reading the chunks and writing their vectors.
    await services.documents.store(
        acme.tenant.id, DocumentInput(HANDBOOK + "\nMore.\n", key="handbook")
    )
    current = stored_vectors(database_url, handbook.id)
    assert not await store.replace_embeddings(handbook, stale)
    assert stored_vectors(database_url, handbook.id) == current

    # New labels keep the chunks, so vectors computed for them still belong to them.
    fresh = await services.documents.get(handbook.id, acme.tenant.id)
    chunks = await services.documents.chunks(fresh.id, acme.tenant.id)
    relabelled = await services.documents.store(
        acme.tenant.id, DocumentInput(HANDBOOK + "\nMore.\n", key="handbook", tags=("hr",))
    )
    assert relabelled.status == "updated"
    vectors = {c.id: deterministic_embedding("x " + c.content) for c in chunks}
    assert await store.replace_embeddings(fresh, vectors)
    assert all(
        cosine(stored_vectors(database_url, fresh.id)[i], v) > 0.999 for i, v in vectors.items()
    )

    # Deleted meanwhile: nothing to write.
    await services.documents.delete(fresh.id, acme.tenant.id)
    assert not await store.replace_embeddings(fresh, vectors)
