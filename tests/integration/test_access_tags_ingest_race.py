"""A restricted key's writes against the real Postgres, when the stored document changes between
the ingestor's lookup and its write: the access condition is part of the write statement, so a
document retagged, or created by another writer, while the key's group was being embedded is
never replaced; the group's other documents still go in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from agent.domain import Document, NewDocument, WriteStatus
from agent.ports import Embedder
from agent.runtime import Services
from agent.services.access import AccessTagRequired
from agent.services.document_input import DocumentInput
from agent.services.ingest import Ingestor, PendingDocument
from serving.types import EmbeddingResult
from tests.conftest import TenantFixture

HR = ("hr",)


class RacingEmbedder:
    """Runs `meanwhile` once, on the first call, before embedding: the other writer's commit
    lands after the ingestor looked its keys up and before it writes them."""

    def __init__(self, inner: Embedder, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self._meanwhile: Callable[[], Awaitable[None]] | None = meanwhile

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        if self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            await meanwhile()
        return await self._inner.embed(texts)


def pending(items: Sequence[DocumentInput]) -> list[PendingDocument]:
    return [PendingDocument(f"doc{i}", lambda d=d: d) for i, d in enumerate(items)]  # type: ignore[misc]


async def stored(services: Services, acme: TenantFixture, key: str) -> Document:
    return (await services.store.documents.find_documents(acme.tenant.id, [key]))[key]


async def test_a_document_retagged_or_created_while_embedding_is_not_replaced(
    services: Services, acme: TenantFixture
) -> None:
    docs = services.documents
    tenant = acme.tenant.id
    await docs.ingest(tenant, title="Pay", text="Paid monthly.", key="pay", tags=HR)
    await docs.ingest(tenant, title="Leave", text="27 days.", key="leave", tags=HR)

    async def another_writer() -> None:
        # An unrestricted writer moves two of the key's documents out of its scope and takes a
        # key it is about to create, all after the key's lookup saw them as its own (or free).
        await docs.ingest(tenant, title="Pay", text="Paid monthly.", key="pay", tags=("eng",))
        await docs.ingest(tenant, title="Leave", text="27 days.", key="leave", tags=("eng",))
        await docs.ingest(tenant, title="Build", text="CI runs nightly.", key="ci", tags=("eng",))

    ingestor = Ingestor(
        services.store.documents,
        RacingEmbedder(services.models.embedder(), another_writer),
        services.settings.agent,
    )
    outcomes = await ingestor.run(
        tenant,
        pending(
            [
                DocumentInput("Paid weekly.", title="Pay", key="pay", tags=HR),  # new content
                DocumentInput("27 days.", title="Leave", key="leave", tags=HR, metadata={"v": 2}),
                DocumentInput("Mine now.", title="Build", key="ci", tags=HR),  # a new key
                DocumentInput("Parental leave.", title="Parental", key="parental", tags=HR),
            ]
        ),
        access_tags=HR,
    )

    assert [(o.status, o.code) for o in outcomes] == [
        ("failed", AccessTagRequired.code),
        ("failed", AccessTagRequired.code),
        ("failed", AccessTagRequired.code),
        ("created", None),
    ]
    assert [o.document for o in outcomes[:3]] == [None, None, None]  # nothing reported back
    assert outcomes[0].reason is not None
    assert "'pay'" in outcomes[0].reason
    # The other writer's versions stand, whole: content, labels and chunks.
    pay, leave, ci = [await stored(services, acme, k) for k in ("pay", "leave", "ci")]
    assert (pay.tags, pay.version, leave.tags, leave.metadata) == (("eng",), 2, ("eng",), {})
    assert (ci.tags, ci.version) == (("eng",), 1)
    for doc, text in ((pay, "Paid monthly."), (ci, "CI runs nightly.")):
        chunks = await services.store.documents.list_chunks(doc.id, tenant, 10)
        assert [c.content for c in chunks] == [text]
    parental = await stored(services, acme, "parental")
    assert parental.tags == HR
    assert len(await services.store.documents.list_chunks(parental.id, tenant, 10)) == 1


def new_document(key: str, tags: tuple[str, ...], marker: str) -> NewDocument:
    return NewDocument(
        key=key,
        title=key,
        source=None,
        metadata={},
        tags=tags,
        content_hash=marker * 64,
        chunks=(),
    )


async def test_the_store_refuses_a_restricted_write_over_a_hidden_document_in_the_statement(
    services: Services, acme: TenantFixture
) -> None:
    store = services.store.documents
    tenant = acme.tenant.id
    [held] = await store.write_documents(tenant, [new_document("held", ("eng",), "a")])
    assert held is not None
    hidden = new_document("held", HR, "b")
    same_content = new_document("held", HR, "a")
    fresh = new_document("fresh", HR, "c")
    for attempt in (hidden, same_content):
        result = await store.write_documents(tenant, [attempt, fresh], access_tags=HR)
        assert result[0] is None  # refused, and not reported back even as unchanged
        assert result[1] is not None
        assert result[1].document.key == "fresh"
    labels_only = NewDocument("held", "held", None, {}, HR, "a" * 64, chunks=None)
    assert await store.write_documents(tenant, [labels_only], access_tags=HR) == [None]
    assert await stored(services, acme, "held") == held.document

    # Within the scope, and for an unrestricted writer, the same statements write as before.
    [mine] = await store.write_documents(tenant, [new_document("held", ("eng", "hr"), "d")])
    assert mine is not None
    assert mine.status is WriteStatus.UPDATED
    [again] = await store.write_documents(tenant, [new_document("held", HR, "e")], HR)
    assert again is not None
    assert (again.status, again.document.version) == (WriteStatus.UPDATED, 3)
