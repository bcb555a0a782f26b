"""Organisation data for agents: `sql_query` as the tenant's role, and typed state records."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from agent.domain import (
    JSON,
)


@dataclass(frozen=True, slots=True)
class SqlCatalog:
    """What `sql_query` may read: the views (with their columns) and functions of one schema."""

    schema: str
    views: Mapping[str, tuple[str, ...]]
    functions: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SqlLimits:
    timeout_s: float
    """Client-side deadline for connecting, running and fetching; the query is cancelled then."""
    max_rows: int
    max_bytes: int
    """Of the rows as JSON text; the rows that fit are returned and the cut is reported."""


@dataclass(frozen=True, slots=True)
class SqlRows:
    columns: tuple[str, ...]
    rows: list[list[Any]]
    """JSON values (numbers, text, booleans, null, objects, lists)."""
    truncated: str | None
    """`rows` or `bytes` when more rows were there than returned; None when they all fit."""
    elapsed_ms: float


@dataclass(frozen=True, slots=True)
class SqlFailure:
    code: str
    """`sql_timeout`, `sql_error` (Postgres refused or failed the query) or `sql_not_configured`
    (the tenant has no database role: the database user may not create roles)."""
    message: str


class TenantSql(Protocol):
    """Read-only SQL run as the tenant's own database role, never as the application's."""

    async def catalog(self) -> SqlCatalog: ...
    async def run(self, tenant_id: uuid.UUID, sql: str, limits: SqlLimits) -> SqlRows | SqlFailure:
        """Run one statement in a read-only transaction on a connection of its own."""
        ...


@dataclass(frozen=True, slots=True)
class StateRecord:
    """A typed piece of state an agent reads and writes through its contract."""

    tenant_id: uuid.UUID
    key: str
    type: str
    owner: str
    """Who created it (`run:<id>`, or a system such as `crm` that loads records)."""
    version: int
    """1 on creation, +1 on every write: a write names the version it was based on."""
    valid_until: datetime | None
    """After this a reader must treat the data as out of date; None: valid until changed."""
    data: JSON
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RecordRead:
    record: StateRecord | None
    seen_version: int | None
    """The version this run last read or wrote, from its own committed steps; None if never."""
    seen_valid_until: datetime | None
    """The validity of that copy: once passed, the run's copy is stale even if unchanged."""


class RecordStore(Protocol):
    async def read(self, tenant_id: uuid.UUID, key: str, run_id: uuid.UUID) -> RecordRead: ...
    async def write(
        self,
        tenant_id: uuid.UUID,
        key: str,
        *,
        type: str,
        owner: str,
        data: JSON,
        valid_until: datetime | None,
        expected_version: int,
    ) -> StateRecord | None:
        """Create (`expected_version` 0, the key must be free) or update the record at exactly
        `expected_version` (and of the same type). None, and nothing written, otherwise."""
        ...

    async def get(self, tenant_id: uuid.UUID, key: str) -> StateRecord | None: ...
