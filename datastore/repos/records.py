"""State records: typed, versioned, tenant-scoped rows that agents read and write by key.

Writes are optimistic: an update names the version it was based on (`WHERE version = :expected`)
and a create requires the key to be free, so two writers that read the same version cannot both
win. The version a run last saw is not stored anywhere new: it is in the run's own committed
steps (the `version` in the result of its last `read_record`/`write_record` of that key).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncEngine

from agent.domain import JSON
from agent.ports import RecordRead, StateRecord
from datastore.errors import translated

RECORD_TOOLS = ("read_record", "write_record")

_COLUMNS = "tenant_id, key, type, owner, version, valid_until, data, updated_at"

READ_SQL = text(
    f"""
    WITH seen AS (
        SELECT (s.result->>'version')::int AS version,
               (s.result->>'valid_until')::timestamptz AS valid_until
        FROM steps s
        WHERE s.run_id = :run AND s.tenant_id = :tenant AND s.tool = ANY(:tools)
          AND s.result->>'key' = :key AND s.result ? 'version'
        ORDER BY s.number DESC
        LIMIT 1
    )
    SELECT r.*, seen.version AS seen_version, seen.valid_until AS seen_valid_until
    FROM (SELECT 1) AS one
    LEFT JOIN seen ON true
    LEFT JOIN (SELECT {_COLUMNS} FROM state_records WHERE tenant_id = :tenant AND key = :key) r
        ON true
    """  # noqa: S608 -- a constant column list, no input
)

GET_SQL = text(
    f"SELECT {_COLUMNS} FROM state_records WHERE tenant_id = :tenant AND key = :key"  # noqa: S608
)

CREATE_SQL = text(
    f"""
    INSERT INTO state_records (tenant_id, key, type, owner, version, valid_until, data)
    VALUES (:tenant, :key, :type, :owner, 1, :valid_until, CAST(:data AS jsonb))
    ON CONFLICT (tenant_id, key) DO NOTHING
    RETURNING {_COLUMNS}
    """  # noqa: S608
)

UPDATE_SQL = text(
    f"""
    UPDATE state_records
    SET version = version + 1, valid_until = :valid_until, data = CAST(:data AS jsonb),
        updated_at = now()
    WHERE tenant_id = :tenant AND key = :key AND version = :expected AND type = :type
    RETURNING {_COLUMNS}
    """  # noqa: S608
)


def _record(row: Row[Any]) -> StateRecord:
    return StateRecord(
        tenant_id=row.tenant_id,
        key=row.key,
        type=row.type,
        owner=row.owner,
        version=row.version,
        valid_until=row.valid_until,
        data=row.data,
        updated_at=row.updated_at,
    )


class RecordRepository:
    """Implements `agent.ports.RecordStore`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def read(self, tenant_id: uuid.UUID, key: str, run_id: uuid.UUID) -> RecordRead:
        """The record and what this run last saw of it, in one round trip."""
        params = {"tenant": tenant_id, "key": key, "run": run_id, "tools": list(RECORD_TOOLS)}
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(READ_SQL, params)).one()
        return RecordRead(
            record=None if row.key is None else _record(row),
            seen_version=row.seen_version,
            seen_valid_until=row.seen_valid_until,
        )

    async def get(self, tenant_id: uuid.UUID, key: str) -> StateRecord | None:
        async with translated(), self._engine.connect() as conn:
            row = (await conn.execute(GET_SQL, {"tenant": tenant_id, "key": key})).first()
        return None if row is None else _record(row)

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
        params = {
            "tenant": tenant_id,
            "key": key,
            "type": type,
            "owner": owner,
            "valid_until": valid_until,
            "data": json.dumps(data),
            "expected": expected_version,
        }
        statement = CREATE_SQL if expected_version == 0 else UPDATE_SQL
        async with translated(), self._engine.begin() as conn:
            row = (await conn.execute(statement, params)).first()
        return None if row is None else _record(row)
