"""Checking and reading out the audit log, for `garrison audit verify|export`.

Entries are written where the changes they record happen (each store appends inside its own
transaction); this service only reads. `verify` has the store recompute the hash chain from the
first entry and, given an anchor (an entry's id and hash noted down earlier, e.g. from a past
verify or export), checks that entry still carries it: the chain alone cannot tell a log cut
short, or rewritten from some entry on with fresh hashes, from an untouched one; an anchor can.
`pages` reads a selection oldest first in keyset pages, so an export of millions of entries
streams in constant memory.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from agent.domain import AuditEntry, ChainBreak, ChainReport
from agent.errors import CallerError, NotFound
from agent.ports import TenantStore

EXPORT_BATCH = 1000
VERIFY_BATCH = 2000
ANCHOR_MISMATCH = "audit_anchor_mismatch"
_ANCHOR = re.compile(r"^(\d{1,18}):([0-9a-f]{64})$")


class InvalidAnchor(CallerError):
    code = "invalid_anchor"


class AuditStore(Protocol):
    async def verify(
        self, progress: Callable[[int], None] | None = None, batch: int = ...
    ) -> ChainReport:
        """Recompute the chain from the first entry, `batch` entries a round trip, reporting
        the count checked after each; the first break, if any."""
        ...

    async def get_entry(self, entry_id: int) -> AuditEntry | None: ...
    async def entries_after(
        self,
        after_id: int,
        limit: int,
        *,
        since: datetime | None = None,
        tenant_id: uuid.UUID | None = None,
    ) -> list[AuditEntry]: ...
    async def count_entries(
        self, *, since: datetime | None = None, tenant_id: uuid.UUID | None = None
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class Anchor:
    """An entry's id and the hash it had when someone noted it down."""

    entry_id: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        found = _ANCHOR.match(text.strip().lower())
        if found is None:
            raise InvalidAnchor(
                f"an anchor is ENTRY_ID:HASH (the id and 64-hex-digit hash that `garrison audit "
                f"verify` reports as its head); got {text!r}"
            )
        return cls(int(found.group(1)), found.group(2))


@dataclass(frozen=True, slots=True)
class AuditSelection:
    """Which entries an export covers, and how many there were when it started."""

    since: datetime | None
    tenant_id: uuid.UUID | None
    total: int


class AuditService:
    def __init__(self, store: AuditStore, tenants: TenantStore) -> None:
        self._store = store
        self._tenants = tenants

    async def verify(
        self,
        anchor: Anchor | None = None,
        progress: Callable[[int], None] | None = None,
        batch: int = VERIFY_BATCH,
    ) -> ChainReport:
        report = await self._store.verify(progress, batch)
        if report.broken is not None or anchor is None:
            return report
        entry = await self._store.get_entry(anchor.entry_id)
        if entry is None:
            problem = "is gone: the log was cut short or the entry deleted"
        elif entry.hash != anchor.hash:
            problem = "carries another hash now: the log was rewritten from there on or before"
        else:
            return report
        message = f"anchored audit entry {anchor.entry_id} {problem}"
        return replace(report, broken=ChainBreak(anchor.entry_id, ANCHOR_MISMATCH, message))

    async def select(
        self, *, since: datetime | None = None, tenant: str | None = None
    ) -> AuditSelection:
        tenant_id = None
        if tenant is not None:
            found = await self._tenants.get_tenant(tenant)
            if found is None:
                raise NotFound(f"tenant {tenant!r} not found")
            tenant_id = found.id
        total = await self._store.count_entries(since=since, tenant_id=tenant_id)
        return AuditSelection(since, tenant_id, total)

    async def pages(
        self, selection: AuditSelection, batch: int = EXPORT_BATCH
    ) -> AsyncIterator[list[AuditEntry]]:
        """The selected entries, oldest first, `batch` at a time; entries appended meanwhile
        are included when their page is read."""
        after = 0
        while page := await self._store.entries_after(
            after, batch, since=selection.since, tenant_id=selection.tenant_id
        ):
            yield page
            after = page[-1].id

    async def tenant_names(self) -> dict[uuid.UUID, str]:
        return {t.id: t.name for t in await self._tenants.list_tenants()}
