"""Who one CLI invocation acts as, and whether it may run its command.

Without a key the CLI is the local administrator, as it always was: whoever can reach the
database administers it, so the CLI holds every role and sees every tenant, audited as
`cli:<os user>`. With a key (`--key` or GARRISON_API_KEY) it acts exactly as that key does
through the API: the key is authenticated by the same key service (`unauthorized` when unknown
or revoked), must hold the role `ops.command_roles` names for the command (`forbidden`), and the
command sees the key's tenant only (another tenant's object is `not_found`, naming another
tenant is `forbidden`) and, for a key with access tags, only the documents and runs those tags
cover (`agent.services.access`); the audit log names the key (`key:<id>`).

Host commands (`ops.command_roles.HOST`: processes, schema, engines, models, tenants, the whole
audit chain) act on the appliance rather than on one tenant, so no key may run them: with one
they are refused (`forbidden`) before anything is opened. With GARRISON_CLI_REQUIRE_KEY=true,
any other command without a key is refused (`key_required`) before anything is opened; host
commands still run without one, as the host's administrator.

What does not belong here: the table itself (`ops.command_roles`), which role holds which
(`agent.roles`), and opening the database (`ops.runtime`, which calls `Gate.admit`).
"""

from __future__ import annotations

import getpass
import os
import uuid
from dataclasses import dataclass
from typing import overload

from agent.domain import Principal, Tenant
from agent.errors import Forbidden
from agent.roles import require
from agent.runtime import Services
from ops.command_roles import HOST, Host, Needed, needed_role
from ops.errors import CALLER, CliError


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a command acts as: a key within its tenant, or the local administrator."""

    actor: str
    """How the audit log names it: `key:<id>`, or `cli:<os user>`."""
    principal: Principal | None = None
    """The key as the key service authenticated it (roles and all); None: the local
    administrator."""
    tenant: Tenant | None = None
    """The key's tenant, the only one the command may see or name; None: every tenant."""

    @classmethod
    def local(cls) -> Caller:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # containers often run as a uid with no passwd entry
            user = f"uid-{os.getuid()}"
        return cls(actor=f"cli:{user}")

    @property
    def tenant_id(self) -> uuid.UUID | None:
        """What a lookup by id is scoped to, as the API scopes it: another tenant's object is
        `not_found`. None (every tenant) only for the local administrator."""
        return None if self.tenant is None else self.tenant.id

    @property
    def key_id(self) -> uuid.UUID | None:
        return None if self.principal is None else self.principal.key_id

    @property
    def access_tags(self) -> tuple[str, ...] | None:
        """The key's access tags, passed to every document, search and run service call as the
        API passes them; None: the whole tenant (or every tenant, for the local
        administrator)."""
        return None if self.principal is None else self.principal.access_tags

    @overload
    def scope(self, named: str) -> str: ...
    @overload
    def scope(self, named: str | None) -> str | None: ...
    def scope(self, named: str | None) -> str | None:
        """The tenant a `--tenant` option lets the command act on: as named for the local
        administrator (None: every tenant); for a key, its own tenant, whether named or not."""
        if self.tenant is None:
            return named
        if named is not None and named != self.tenant.name:
            # Refused by name, before any lookup: whether that tenant exists is not the
            # key's business.
            raise Forbidden(
                f"this API key acts for tenant {self.tenant.name!r} only, not {named!r}"
            )
        return self.tenant.name


class Gate:
    """One invocation's admission: its command's role, the key if any, and the caller once
    admitted (so a command that opens the database twice authenticates once)."""

    def __init__(self, command: str, key: str | None, *, require_key: bool) -> None:
        self.command = command
        self.needed: Needed = needed_role(command)
        self._key = key
        self._caller: Caller | None = None
        if self.host and key is not None:
            # Refused whatever the key's roles, and before it is even looked up: these commands
            # reach every tenant, which no key of one tenant may.
            raise self._host_only()
        if key is None and require_key and not self.host:
            raise CliError(
                "key_required",
                f"`garrison {command}` needs an API key here (GARRISON_CLI_REQUIRE_KEY is on): "
                "pass --key or set GARRISON_API_KEY",
                CALLER,
            )

    @property
    def keyed(self) -> bool:
        """Whether the command was given a key (authenticated or not yet): it then acts for one
        tenant at most, and never migrates the schema (`ops.runtime`)."""
        return self._key is not None

    @property
    def host(self) -> bool:
        """Whether the command acts on the appliance (run without a key only)."""
        return self.needed is HOST

    async def admit(self, services: Services) -> Caller:
        """The caller, or `unauthorized` / `forbidden` as the API would answer the key."""
        if self._caller is None:
            self._caller = await self._admit(services)
        return self._caller

    async def _admit(self, services: Services) -> Caller:
        if self._key is None:
            return Caller.local()
        if isinstance(self.needed, Host):  # refused in __init__ already; fail closed all the same
            raise self._host_only()
        principal = await services.keys.authenticate(self._key)
        require(principal.roles, self.needed, f"`garrison {self.command}`")
        # A key's tenant is always there: tenants are never deleted, and a key belongs to one.
        tenants = {t.id: t for t in await services.tenancy.list_tenants()}
        return Caller(
            actor=principal.actor, principal=principal, tenant=tenants[principal.tenant_id]
        )

    def _host_only(self) -> Forbidden:
        return Forbidden(
            f"`garrison {self.command}` acts on the whole appliance, not on one tenant: run it "
            "as the host's administrator, without an API key (no --key, GARRISON_API_KEY unset)"
        )
