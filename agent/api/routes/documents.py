"""`/v1/documents`: ingest documents (one or a batch), list, read, delete them."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Response

from agent.api.deps import AUTHORIZED, DocumentId, PrincipalDep, ServicesDep
from agent.api.document_schemas import (
    DOCUMENTS_PATH,
    BatchItem,
    BatchResult,
    ChunkList,
    ChunkOut,
    DocumentBatch,
    DocumentCreate,
    DocumentIngested,
    DocumentList,
    DocumentOut,
)
from agent.api.errors import error_responses
from agent.formats import DocumentFormat, parse_document
from agent.services.document_input import DocumentInput
from agent.services.ingest import PendingDocument

documents = APIRouter(prefix=DOCUMENTS_PATH, tags=["documents"], dependencies=AUTHORIZED)


def _input(body: DocumentCreate) -> DocumentInput:
    """The request as a document; bytes are parsed here, so this runs in a worker thread."""
    text, fmt, title = body.text or "", body.format or DocumentFormat.TEXT, body.title
    if body.content_base64 is not None:
        parsed = parse_document(body.content_base64, body.format, name=body.source or "")
        text, fmt, title = parsed.text, parsed.text_format, body.title or parsed.title
    return DocumentInput(
        text=text,
        title=title,
        format=fmt,
        metadata=body.metadata or {},
        tags=tuple(body.tags),
        key=body.key,
        source=body.source,
    )


@documents.post(
    "",
    status_code=201,
    summary="Ingest a document",
    description=(
        "Reads the document (`text`, or a file's bytes as `content_base64`: PDF, HTML, "
        "Markdown, text), then chunks, embeds and stores it under its key. The same content "
        "again stores nothing and answers 200 with `created: false`; other content under the "
        "same key replaces the document (a new version) and answers 200 with `updated: true`."
    ),
    responses={
        200: {"model": DocumentIngested, "description": "Unchanged, or replaced (updated)."},
        **error_responses(401, 403, 413, 422, 500, 502, 503),
    },
)
async def create_document(
    body: DocumentCreate, principal: PrincipalDep, services: ServicesDep, response: Response
) -> DocumentIngested:
    document = await asyncio.to_thread(_input, body)
    outcome = await services.documents.store(
        principal.tenant_id, document, access_tags=principal.access_tags
    )
    doc = outcome.document
    assert doc is not None  # only a failed outcome has none, and that raised CallerError
    response.headers["Location"] = f"{DOCUMENTS_PATH}/{doc.id}"
    if outcome.status != "created":
        response.status_code = 200
    return DocumentIngested.from_domain(doc, outcome.status)


@documents.post(
    "/batch",
    summary="Ingest many documents",
    description=(
        "Each document is stored as by `POST /v1/documents`, embedded and committed in batches. "
        "One that cannot be stored is reported in its item with the reason; the others go in."
    ),
    responses=error_responses(401, 403, 413, 422, 500, 502, 503),
)
async def create_documents(
    body: DocumentBatch, principal: PrincipalDep, services: ServicesDep
) -> BatchResult:
    pending = [
        PendingDocument(f"documents[{i}]", lambda doc=doc: _input(doc))  # type: ignore[misc]
        for i, doc in enumerate(body.documents)
    ]
    outcomes = await services.documents.ingest_many(
        principal.tenant_id, pending, access_tags=principal.access_tags
    )
    items = [BatchItem.from_outcome(i, o) for i, o in enumerate(outcomes)]
    return BatchResult(
        data=items,
        created=sum(i.status == "created" for i in items),
        updated=sum(i.status == "updated" for i in items),
        unchanged=sum(i.status == "unchanged" for i in items),
        failed=sum(i.status == "failed" for i in items),
    )


@documents.get(
    "",
    summary="List documents",
    description="The caller's tenant's documents, newest first.",
    responses=error_responses(401, 403, 422, 500, 503),
)
async def list_documents(
    principal: PrincipalDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> DocumentList:
    docs = await services.documents.list(
        principal.tenant_id, limit, offset, access_tags=principal.access_tags
    )
    return DocumentList(data=[DocumentOut.from_domain(d) for d in docs])


@documents.get(
    "/{document_id}",
    summary="Read a document",
    responses=error_responses(401, 403, 404, 422, 500, 503),
)
async def get_document(
    document_id: DocumentId, principal: PrincipalDep, services: ServicesDep
) -> DocumentOut:
    doc = await services.documents.get(
        document_id, principal.tenant_id, access_tags=principal.access_tags
    )
    return DocumentOut.from_domain(doc)


@documents.get(
    "/{document_id}/chunks",
    summary="Read a document's chunks",
    description="The passages the document was cut into, in order, as search returns them.",
    responses=error_responses(401, 403, 404, 422, 500, 503),
)
async def get_chunks(
    document_id: DocumentId,
    principal: PrincipalDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ChunkList:
    chunks = await services.documents.chunks(
        document_id, principal.tenant_id, limit, access_tags=principal.access_tags
    )
    return ChunkList(data=[ChunkOut.from_domain(c) for c in chunks])


@documents.delete(
    "/{document_id}",
    status_code=204,
    summary="Delete a document",
    description="The document and its chunks go in one commit; search never sees them again.",
    responses=error_responses(401, 403, 404, 422, 500, 503),
)
async def delete_document(
    document_id: DocumentId, principal: PrincipalDep, services: ServicesDep
) -> Response:
    await services.documents.delete(
        document_id, principal.tenant_id, access_tags=principal.access_tags
    )
    return Response(status_code=204)


router = APIRouter()
router.include_router(documents)
