"""Every dependency a route can ask for, as `Annotated` aliases in one place.

`ServicesDep` is the shared `Services`; `PrincipalDep` authenticates the bearer key (and so
declares the security scheme in the OpenAPI document) and checks that the key holds the role
`agent.api.roles` names for the route being called: there is no way for a route to get a caller
whose role was not checked. `AUTHORIZED` is the same check as a router-level dependency, so it
runs before any other (a bad key is a 401 before a malformed id is a 404). `RunId` and
`DocumentId` turn path segments into UUIDs. Dependencies raise domain errors;
`agent.api.errors` renders them.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agent.api.roles import ROUTE_ROLES_STATE, bound_role
from agent.domain import Principal
from agent.errors import NotFound, Unauthorized
from agent.roles import require
from agent.runtime import Services

# auto_error=False: a missing or non-Bearer header must fail through our Unauthorized, with
# our error body and WWW-Authenticate, not FastAPI's own 401/403.
_bearer = HTTPBearer(
    scheme_name="bearer",
    description="A Garrison API key: `Authorization: Bearer gk_...`.",
    auto_error=False,
)


def get_services(request: Request) -> Services:
    services = getattr(request.app.state, "services", None)
    if not isinstance(services, Services):
        raise RuntimeError("the app's services are not open; was it started without lifespan?")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_principal(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # The route's role first: a route missing from the table fails for every caller (500),
    # loudly, instead of serving anyone who happens to hold a key.
    route = request.scope.get("route")
    where = f"{request.method} {getattr(route, 'path_format', request.url.path)}"
    bound = getattr(request.app.state, ROUTE_ROLES_STATE, None)
    needed = bound_role(bound, route, where)
    if credentials is None:
        raise Unauthorized("a valid API key is required (Authorization: Bearer gk_...)")
    principal = await services.keys.authenticate(credentials.credentials)
    require(principal.roles, needed, where)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
AUTHORIZED = [Depends(get_principal)]
"""For `APIRouter(dependencies=AUTHORIZED)`: authenticate and authorise before anything else.
FastAPI caches the result per request, so a route's own `PrincipalDep` costs nothing more."""


def _object_id(kind: str, value: str) -> uuid.UUID:
    # Not a 422: a malformed id names no object, and saying why would only help someone probe.
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{kind} not found") from None


def run_id(run_id: Annotated[str, Path(description="The run's id (a UUID).")]) -> uuid.UUID:
    return _object_id("run", run_id)


def document_id(
    document_id: Annotated[str, Path(description="The document's id (a UUID).")],
) -> uuid.UUID:
    return _object_id("document", document_id)


RunId = Annotated[uuid.UUID, Depends(run_id)]
DocumentId = Annotated[uuid.UUID, Depends(document_id)]


def approval_id(
    approval_id: Annotated[str, Path(description="The approval's id (a UUID).")],
) -> uuid.UUID:
    return _object_id("approval", approval_id)


ApprovalId = Annotated[uuid.UUID, Depends(approval_id)]
