"""The tools an agent may be allowed to call, by name.

Some tools need configuration (the SMTP relay, the HTTP allow-list), so the set is built from
settings at the composition root (`build_tools`); `TOOL_NAMES` is what an agent definition may
name, whatever is configured: an unconfigured tool refuses at decision time with a code the
model and the step record both see.
"""

from __future__ import annotations

from typing import Any

from agent.outbox.settings import OutboxSettings
from agent.ports import RecordStore, SqlLimits, TenantSql
from agent.sqlguard import SqlChecks
from agent.tools.base import Tool, ToolContext, ToolResult
from agent.tools.finish import Finish
from agent.tools.http_request import HttpRequest
from agent.tools.read_record import ReadRecord
from agent.tools.search_documents import SearchDocuments
from agent.tools.send_email import SendEmail
from agent.tools.sql_query import SqlQuery
from agent.tools.write_record import WriteRecord

DEFAULT_TOOLS = ("search_documents", "finish")
TOOL_NAMES = frozenset(
    {
        SearchDocuments.name,
        Finish.name,
        SendEmail.name,
        HttpRequest.name,
        SqlQuery.name,
        ReadRecord.name,
        WriteRecord.name,
    }
)


def build_tools(
    outbox: OutboxSettings,
    *,
    sql: TenantSql | None = None,
    records: RecordStore | None = None,
    sql_limits: SqlLimits | None = None,
    sql_checks: SqlChecks | None = None,
) -> dict[str, Tool[Any]]:
    """Tools that need a store are built only when it is given (the runtime always gives it;
    pure unit tests of the decision layer do not need them). `sql_limits` caps `sql_query`
    (its defaults when None); `sql_checks` is the guard's memory it shares with the policy gate
    (its own when None)."""
    tools: list[Tool[Any]] = [
        SearchDocuments(),
        Finish(),
        SendEmail(outbox),
        HttpRequest(outbox),
    ]
    if sql is not None:
        if sql_limits is None:
            tools.append(SqlQuery(sql, checks=sql_checks))
        else:
            tools.append(
                SqlQuery(
                    sql,
                    checks=sql_checks,
                    timeout_s=sql_limits.timeout_s,
                    max_rows=sql_limits.max_rows,
                    max_bytes=sql_limits.max_bytes,
                )
            )
    if records is not None:
        tools += [ReadRecord(records), WriteRecord(records)]
    return {t.name: t for t in tools}


__all__ = [
    "DEFAULT_TOOLS",
    "TOOL_NAMES",
    "Tool",
    "ToolContext",
    "ToolResult",
    "build_tools",
]
