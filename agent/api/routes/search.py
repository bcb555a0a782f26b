"""`/v1/search`: the caller's tenant's documents, searched as the agent's tool searches them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from agent.api.deps import AUTHORIZED, PrincipalDep, ServicesDep
from agent.api.document_schemas import (
    SEARCH_PATH,
    SearchHit,
    SearchParams,
    SearchPlanOut,
    SearchResults,
)
from agent.api.errors import error_responses
from agent.domain import SearchFilter

router = APIRouter(tags=["search"], dependencies=AUTHORIZED)


@router.get(
    SEARCH_PATH,
    summary="Search documents",
    description=(
        "Hybrid search (vector similarity fused with keyword matches) over the caller's "
        "tenant's chunks, optionally filtered by tags and metadata. Returns exactly `k` hits "
        "whenever at least `k` chunks are in scope, each with its document, chunk, score and "
        "matching snippet, and says how the search ran."
    ),
    responses=error_responses(401, 403, 422, 500, 502, 503),
)
async def search_documents(
    params: Annotated[SearchParams, Query()], principal: PrincipalDep, services: ServicesDep
) -> SearchResults:
    found = await services.documents.search(
        principal.tenant_id,
        params.q,
        k=params.k,
        filter=SearchFilter(
            tags=tuple(params.tag), any_tags=tuple(params.any_tag), metadata=params.metadata or {}
        ),
        mode=params.mode,
        access_tags=principal.access_tags,
    )
    return SearchResults(
        data=[SearchHit.from_domain(h) for h in found.result.hits],
        search=SearchPlanOut.from_domain(found.result.plan),
    )
