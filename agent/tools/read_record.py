"""`read_record`: read a typed state record by key, and say whether the run's earlier copy is stale.

The run's memory of a record is its own step history: the version (and validity) in the result
of its last `read_record`/`write_record` of that key. Every read goes to the database, so the
result is always current; when what the run saw before has since changed, or its validity ran
out, the result says so (`freshness`, `previous_version`), so the model knows that anything it
concluded from the earlier copy must be revisited.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from agent.domain import JSON
from agent.ports import RecordStore, StateRecord
from agent.tools.base import Tool, ToolArguments, ToolContext, ToolResult

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}$"
RecordKey = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=KEY_PATTERN)]

FIRST_READ = "first_read"
UNCHANGED = "unchanged"
CHANGED = "changed_since_last_read"
EXPIRED = "expired_since_last_read"
MISSING = "missing"
DELETED = "deleted_since_last_read"


class ReadRecordArgs(ToolArguments):
    key: RecordKey = Field(description="The record's key, e.g. customer:1042:preferences.")


def record_fields(record: StateRecord) -> JSON:
    """How a record appears in a step's result; `key` and `version` are what the run remembers."""
    return {
        "key": record.key,
        "type": record.type,
        "owner": record.owner,
        "version": record.version,
        "valid_until": record.valid_until.isoformat() if record.valid_until else None,
        "updated_at": record.updated_at.isoformat(),
    }


class ReadRecord(Tool[ReadRecordArgs]):
    name = "read_record"
    description = (
        "Read a state record (typed data such as customer preferences) by key. Always current; "
        "says if it changed since you last read it."
    )
    arguments = ReadRecordArgs

    def __init__(self, records: RecordStore) -> None:
        self._records = records

    async def run(self, args: ReadRecordArgs, ctx: ToolContext) -> ToolResult:
        read = await self._records.read(ctx.tenant_id, args.key, ctx.run_id)
        now = datetime.now(UTC)
        record = read.record
        if record is None:
            gone = read.seen_version is not None and read.seen_version > 0
            data: JSON = {"key": args.key, "found": False, "version": 0}
            data["freshness"] = DELETED if gone else MISSING
            if gone:
                data["previous_version"] = read.seen_version
                data["note"] = "the record was deleted since you last read it"
            return ToolResult(data=data)
        result: JSON = {**record_fields(record), "found": True, "data": record.data}
        expired = record.valid_until is not None and record.valid_until <= now
        result["expired"] = expired
        if read.seen_version is None:
            result["freshness"] = FIRST_READ
        elif read.seen_version != record.version:
            result["freshness"] = CHANGED
            result["previous_version"] = read.seen_version
            result["note"] = (
                f"changed since you last read it (version {read.seen_version}, now "
                f"{record.version}): re-fetched; do not rely on the earlier copy"
            )
        elif read.seen_valid_until is not None and read.seen_valid_until <= now:
            result["freshness"] = EXPIRED
            result["previous_version"] = read.seen_version
            result["note"] = "the copy you read earlier is past its validity: re-fetched"
        else:
            result["freshness"] = UNCHANGED
        if expired:
            result.setdefault("note", "the record is past its validity: treat it as out of date")
        return ToolResult(data=result)
