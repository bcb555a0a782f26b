"""`write_record`: create or update a typed state record, never over a version the run did not see.

The version a write is based on is not an argument the model could invent: it is the version the
run itself last read or wrote (its step history). The store applies it optimistically
(`UPDATE ... WHERE version = expected`; a create needs the key free), so a record that changed
since the run read it — "the customer changed their preferences twenty minutes ago" — is not
overwritten: the step records `stale_version` and the model must read it again first.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field

from agent.domain import JSON
from agent.ports import RecordStore
from agent.tools.base import Tool, ToolArguments, ToolContext, ToolResult
from agent.tools.read_record import RecordKey, record_fields
from agent.tools.record_types import (
    MAX_DATA_BYTES,
    RECORD_INVALID,
    RECORD_TYPE_MISMATCH,
    RECORD_TYPES,
    STALE_VERSION,
    InvalidRecord,
    RecordTypeName,
    validated,
)


class WriteRecordArgs(ToolArguments):
    key: RecordKey = Field(description="The record's key.")
    type: RecordTypeName = Field(description="The record's type; its data must match it.")
    data: dict[str, Any] = Field(max_length=32, description="The whole new content.")
    valid_for_hours: int | None = Field(
        default=None, ge=1, le=24 * 366, description="How long it stays valid (type default)."
    )


def refused(code: str, message: str, key: str, **extra: Any) -> ToolResult:
    # No `version` in a refusal: the run has not seen any version by being refused.
    return ToolResult(data={"error": {"code": code, "message": message}, "key": key, **extra})


class WriteRecord(Tool[WriteRecordArgs]):
    name = "write_record"
    description = (
        "Create or replace a state record's data. Read it first: a write over a version you did "
        "not read is refused (stale_version)."
    )
    arguments = WriteRecordArgs

    def __init__(self, records: RecordStore) -> None:
        self._records = records

    async def run(self, args: WriteRecordArgs, ctx: ToolContext) -> ToolResult:
        try:
            data = validated(args.type, args.data)
        except InvalidRecord as exc:
            return refused(RECORD_INVALID, exc.message, args.key)
        if len(json.dumps(data)) > MAX_DATA_BYTES:
            return refused(RECORD_INVALID, f"data is over {MAX_DATA_BYTES} bytes", args.key)
        read = await self._records.read(ctx.tenant_id, args.key, ctx.run_id)
        expected = read.seen_version or 0
        current = read.record
        if current is not None and current.type != args.type:
            return refused(
                RECORD_TYPE_MISMATCH,
                f"the record is a {current.type}, not a {args.type}",
                args.key,
            )
        if current is not None and current.version != expected:
            return self._stale(args.key, expected, current.version)
        if current is None and expected > 0:
            return self._stale(args.key, expected, 0)
        valid_for = (
            timedelta(hours=args.valid_for_hours)
            if args.valid_for_hours is not None
            else RECORD_TYPES[args.type].valid_for
        )
        written = await self._records.write(
            ctx.tenant_id,
            args.key,
            type=args.type,
            owner=f"run:{ctx.run_id}",
            data=data,
            valid_until=datetime.now(UTC) + valid_for if valid_for is not None else None,
            expected_version=expected,
        )
        if written is None:  # another writer won between our read and our write
            now = await self._records.get(ctx.tenant_id, args.key)
            return self._stale(args.key, expected, now.version if now else 0)
        result: JSON = {**record_fields(written), "written": True, "previous_version": expected}
        return ToolResult(data=result)

    @staticmethod
    def _stale(key: str, expected: int, current: int) -> ToolResult:
        if expected == 0:
            message = f"the record exists (version {current}): read it before writing"
        elif current == 0:
            message = f"the record was deleted since you read version {expected}"
        else:
            message = (
                f"the record changed since you read it (you read version {expected}, it is now "
                f"version {current}): read it again, then write"
            )
        return refused(
            STALE_VERSION, message, key, expected_version=expected, current_version=current
        )
