"""Who may call what: the one table of API operations and the role each one needs.

Every `/v1` operation is a row of `ROUTE_ROLES`, keyed by its method and path template exactly
as the OpenAPI document lists it; `PUBLIC_ROUTES` are the few that need no key. Nothing else in
the API decides access: `agent.api.access` binds each served route to its row when the app is
built (and refuses an app with a route in neither table), and `agent.api.deps.get_principal`
checks the bound role on every call.

Roles live inside a tenant: a key acts for one tenant whatever its roles, so an `admin` key of
one tenant sees another tenant's objects no more than a `client` key does (404).

The matrix, and why:

* `client` — the internal system that uses agents: submits runs and reads its tenant's runs,
  steps, events and side effects; reads and searches the documents agents use.
* `operator` — runs the tenant's agents: everything a client may, plus steering runs (cancel,
  resume, fork, replay) and managing documents (ingest, delete).
* `approver` — decides pending approvals (`/v1/approvals`) and nothing else: separation of
  duties, so a key that submits work cannot approve its own side effects. Give one key both
  roles where one person does both.
* `admin` — holds every role, and alone sees appliance-wide facts (the model deployments).

Which role holds which is not decided here but in `agent.roles`, which the CLI's command table
(`ops.command_roles`) shares.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.domain import Role

Route = tuple[str, str]
"""(HTTP method, path template), e.g. ("POST", "/v1/runs/{run_id}/cancel")."""

ROUTE_ROLES: Mapping[Route, Role] = {
    # Runs: a client submits and reads; an operator steers.
    ("POST", "/v1/runs"): Role.CLIENT,
    ("GET", "/v1/runs"): Role.CLIENT,
    ("GET", "/v1/runs/{run_id}"): Role.CLIENT,
    ("GET", "/v1/runs/{run_id}/steps"): Role.CLIENT,
    ("GET", "/v1/runs/{run_id}/events"): Role.CLIENT,
    ("GET", "/v1/runs/{run_id}/effects"): Role.CLIENT,
    ("POST", "/v1/runs/{run_id}/cancel"): Role.OPERATOR,
    ("POST", "/v1/runs/{run_id}/resume"): Role.OPERATOR,
    ("POST", "/v1/runs/{run_id}/fork"): Role.OPERATOR,
    ("POST", "/v1/runs/{run_id}/replay"): Role.OPERATOR,
    # Documents: anyone may read and search what agents read; an operator manages it.
    ("GET", "/v1/documents"): Role.CLIENT,
    ("GET", "/v1/documents/{document_id}"): Role.CLIENT,
    ("GET", "/v1/documents/{document_id}/chunks"): Role.CLIENT,
    ("GET", "/v1/search"): Role.CLIENT,
    ("POST", "/v1/documents"): Role.OPERATOR,
    ("POST", "/v1/documents/batch"): Role.OPERATOR,
    ("DELETE", "/v1/documents/{document_id}"): Role.OPERATOR,
    # Approvals (helper-P2): an approver sees and decides them, and nothing else.
    ("GET", "/v1/approvals"): Role.APPROVER,
    ("GET", "/v1/approvals/{approval_id}"): Role.APPROVER,
    ("POST", "/v1/approvals/{approval_id}/approve"): Role.APPROVER,
    ("POST", "/v1/approvals/{approval_id}/deny"): Role.APPROVER,
    # The appliance itself.
    ("GET", "/v1/models"): Role.ADMIN,
}

PUBLIC_ROUTES: frozenset[Route] = frozenset({("GET", "/healthz"), ("GET", "/readyz")})
"""Answered without a key: liveness and readiness say nothing about any tenant."""

ROUTE_ROLES_STATE = "route_roles"
"""Where `agent.api.access` leaves, in `app.state`, the role bound to each route object."""


class UndeclaredRoute(RuntimeError):
    """A route asked for a caller but has no row in `ROUTE_ROLES`: a bug, refused (fail closed)."""


def bound_role(bound: Mapping[int, Role] | None, route: object, where: str) -> Role:
    """The role bound to the matched `route` (by its id) when the app was built;
    `UndeclaredRoute` for a route that was not there then (so never checked against the
    table)."""
    role = None if bound is None or route is None else bound.get(id(route))
    if role is None:
        raise UndeclaredRoute(
            f"{where} authenticates its caller but no role was bound to its route "
            "(agent.api.roles.ROUTE_ROLES, applied by agent.api.access.apply_role_table)"
        )
    return role
