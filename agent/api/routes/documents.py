"""`/v1/documents`: ingest a document (idempotent by content), list and read documents."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from agent.api.deps import DocumentId, PrincipalDep, ServicesDep
from agent.api.errors import error_responses
from agent.api.schemas import (
    DOCUMENTS_PATH,
    DocumentCreate,
    DocumentIngested,
    DocumentList,
    DocumentOut,
)

router = APIRouter(prefix=DOCUMENTS_PATH, tags=["documents"])


@router.post(
    "",
    status_code=201,
    summary="Ingest a document",
    description=(
        "Chunks, embeds and stores the text. Posting the same title and text again stores "
        "nothing and answers 200 with `created: false`."
    ),
    responses={
        200: {"model": DocumentIngested, "description": "The same content was already stored."},
        **error_responses(401, 413, 422, 500, 502, 503),
    },
)
async def create_document(
    body: DocumentCreate, principal: PrincipalDep, services: ServicesDep, response: Response
) -> DocumentIngested:
    doc, created = await services.documents.ingest(
        principal.tenant_id,
        title=body.title,
        text=body.text,
        metadata=body.metadata,
        source=body.source,
    )
    response.headers["Location"] = f"{DOCUMENTS_PATH}/{doc.id}"
    if not created:
        response.status_code = 200
    return DocumentIngested(
        id=doc.id,
        title=doc.title,
        chunk_count=doc.chunk_count,
        content_hash=doc.content_hash,
        created=created,
    )


@router.get(
    "",
    summary="List documents",
    description="The caller's tenant's documents, newest first.",
    responses=error_responses(401, 422, 500, 503),
)
async def list_documents(
    principal: PrincipalDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DocumentList:
    docs = await services.documents.list(principal.tenant_id, limit)
    return DocumentList(data=[DocumentOut.from_domain(d) for d in docs])


@router.get(
    "/{document_id}",
    summary="Read a document",
    responses=error_responses(401, 404, 422, 500, 503),
)
async def get_document(
    document_id: DocumentId, principal: PrincipalDep, services: ServicesDep
) -> DocumentOut:
    return DocumentOut.from_domain(await services.documents.get(document_id, principal.tenant_id))
