"""Who calls: tenants, their API keys and roles, and the principal a key proves.

Access rules built on these (which documents and runs a key's access tags let it see) are
`agent.services.access`'s; which role each operation needs is `agent.roles`' and the doors'.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    """Roles an API key can carry, inside its tenant. Which role each API operation and CLI
    command needs is stated in one table per door (`agent.api.roles`, `ops.command_roles`);
    which roles imply which, once for both: `agent.roles`."""

    ADMIN = "admin"
    OPERATOR = "operator"
    APPROVER = "approver"
    CLIENT = "client"


@dataclass(frozen=True, slots=True)
class Tenant:
    id: uuid.UUID
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: uuid.UUID
    tenant_id: uuid.UUID
    tenant_name: str
    name: str
    prefix: str
    """The first characters of the key, kept so people can tell keys apart; never enough to use."""
    roles: tuple[Role, ...]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    access_tags: tuple[str, ...] | None = None
    """The key sees only documents carrying at least one of these tags; None: its whole tenant
    (`agent.services.access`)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant every object is scoped to, and the key that proved it."""

    tenant_id: uuid.UUID
    key_id: uuid.UUID
    roles: tuple[Role, ...]
    access_tags: tuple[str, ...] | None = None
    """The key's access tags: only documents carrying at least one of them exist for this
    caller (search, read, delete, and the runs it submits); None: the whole tenant."""

    @property
    def actor(self) -> str:
        """How the audit log names this caller: by its key's id, never by anything secret."""
        return f"key:{self.key_id}"
