"""Binds the role table (`agent.api.roles`) to a built app, once, when the app is created.

Each route the app serves is found under its full path (prefixes of included routers and all)
and given its row of `ROUTE_ROLES`; the result, a map from route object (by id) to role, is in
`app.state` for `agent.api.deps.get_principal`, which checks it on every call. Looking the role
up by the matched route object, rather than by re-deriving a path, keeps the check exact however
routers are nested. The app is refused when a route could escape the table: every route must be
public (`PUBLIC_ROUTES`), or have a row and authenticate its caller through `get_principal`.
So a route added without a row fails at start-up, not in production.

It also writes each operation's role into the OpenAPI document (`x-required-role`, and a
sentence of its description), so clients read the same table the server enforces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from agent.api.deps import get_principal
from agent.api.roles import PUBLIC_ROUTES, ROUTE_ROLES, ROUTE_ROLES_STATE, Route
from agent.domain import Role
from agent.roles import holds

ROLE_EXTENSION = "x-required-role"


def apply_role_table(app: FastAPI) -> None:
    """Bind every route of `app` to its role and document it; `RuntimeError` naming each route
    the table does not cover."""
    # Keyed by the route object's id: routes compare by value and are not hashable, and each
    # lives as long as the app that holds this map.
    bound: dict[int, Role] = {}
    problems = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue  # the OpenAPI document itself
        keys: list[Route] = [(m, context.path_format or "") for m in sorted(context.methods or ())]
        if all(key in PUBLIC_ROUTES for key in keys):
            continue
        where = ", ".join(f"{m} {p}" for m, p in keys)
        if any(key not in ROUTE_ROLES for key in keys):
            problems.append(f"{where} has no row in agent.api.roles.ROUTE_ROLES")
            continue
        roles = {ROUTE_ROLES[key] for key in keys}
        role = roles.pop()
        if roles or bound.get(id(route), role) != role:
            # One route object answers every method and every path it is included under,
            # so they must all need the same role.
            problems.append(f"{where} is served where different roles apply; split it")
        elif not _authenticates(route.dependant):
            problems.append(f"{where} has a role but never checks a key (use PrincipalDep)")
        else:
            bound[id(route)] = role
    if problems:
        raise RuntimeError("routes outside the role table: " + "; ".join(problems))
    setattr(app.state, ROUTE_ROLES_STATE, bound)
    app.openapi = _documented(app.openapi)  # type: ignore[method-assign]


def _authenticates(dependant: Dependant) -> bool:
    return dependant.call is get_principal or any(
        _authenticates(sub) for sub in dependant.dependencies
    )


def _documented(generate: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """`app.openapi`, with each operation's role written in; FastAPI regenerates the document
    when routes change, and each new one is annotated once."""
    annotated: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        document = generate()
        if annotated and annotated[0] is document:
            return document
        for path, item in document.get("paths", {}).items():
            for method, operation in item.items():
                role = ROUTE_ROLES.get((method.upper(), path))
                if role is not None:
                    _describe(operation, role)
        annotated[:] = [document]
        return document

    return openapi


def _describe(operation: dict[str, Any], role: Role) -> None:
    operation[ROLE_EXTENSION] = str(role)
    holders = [f"`{r}`" for r in Role if holds([r], role)]
    needs = f"Needs the `{role}` role"
    if len(holders) > 1:
        needs += f", which keys with any of the roles {', '.join(holders)} hold"
    needs += "."
    description = operation.get("description")
    operation["description"] = f"{description}\n\n{needs}" if description else needs
