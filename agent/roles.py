"""Which role satisfies which: the one rule every way into Garrison checks.

Each door states, in a table of its own, the role each of its operations needs: the API one row
per route (`agent.api.roles`), the CLI one row per command (`ops.command_roles`). Both decide
with `require` here, so a role means the same thing whichever door a key comes through. Nothing
here knows about HTTP or the command line.

Roles live inside a tenant: a key acts for one tenant whatever its roles. `admin` holds every
role; `operator` holds `client`; `approver` holds nothing else, and nothing else holds it, so a
key that submits work cannot approve its own side effects (give one key both roles where one
person does both).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agent.domain import Role
from agent.errors import Forbidden

IMPLIED: Mapping[Role, frozenset[Role]] = {
    Role.ADMIN: frozenset(Role),
    Role.OPERATOR: frozenset({Role.OPERATOR, Role.CLIENT}),
    Role.APPROVER: frozenset({Role.APPROVER}),
    Role.CLIENT: frozenset({Role.CLIENT}),
}
"""The roles each role holds: itself and, for admin and operator, the ones below it."""


def holds(roles: Iterable[Role], needed: Role) -> bool:
    """Whether a key with `roles` may do what needs `needed`."""
    return any(needed in IMPLIED[role] for role in roles)


def refusal(roles: Iterable[Role], needed: Role, operation: str) -> str:
    """What a caller without the role is told: what it lacks and what it has."""
    held = ", ".join(sorted(str(r) for r in roles)) or "none"
    return (
        f"this API key lacks the {needed} role, which {operation} needs (its roles: {held}); "
        f"ask an administrator for a key with the {needed} role"
    )


def require(roles: Iterable[Role], needed: Role, operation: str) -> None:
    """`Forbidden` unless a key with `roles` may do `operation`, which needs `needed`."""
    held = tuple(roles)
    if not holds(held, needed):
        raise Forbidden(refusal(held, needed, operation))
