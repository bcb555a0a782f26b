"""`sql_query`: one read-only SELECT over the organisation's allow-listed views, as the tenant.

Two walls, each sufficient for isolation on its own. The guard (`agent.sqlguard`) parses the SQL
with Postgres' grammar and accepts exactly one plain SELECT over the views of `tenant_data`; the
SQL that runs is rendered from the checked tree. Then the `TenantSql` port runs it as the
tenant's own LOGIN role (read-only, row-level security on `current_user`, no privilege beyond
SELECT on those views) with a client-side deadline, and caps the rows and bytes it returns.

Outcomes are stable codes in the step's result, which the model sees and can act on:
`sql_rejected` (with the guard's `reason`), `sql_timeout`, `sql_error`, `sql_not_configured`.
"""

from __future__ import annotations

from typing import Final

from pydantic import Field

from agent.domain import JSON
from agent.ports import SqlFailure, SqlLimits, TenantSql
from agent.sqlguard import MAX_SQL_CHARS, Accepted, Rejected, SqlChecks
from agent.tools.base import Tool, ToolArguments, ToolContext, ToolResult

SQL_REJECTED: Final = "sql_rejected"
DEFAULT_TIMEOUT_S: Final = 5.0
DEFAULT_MAX_ROWS: Final = 200
DEFAULT_MAX_BYTES: Final = 32_768


def refusal(verdict: Rejected) -> JSON:
    """The result of a query the guard refused, as the model sees it."""
    return {"error": {"code": SQL_REJECTED, "reason": verdict.reason, "message": verdict.message}}


class SqlQueryArgs(ToolArguments):
    sql: str = Field(
        min_length=1,
        max_length=MAX_SQL_CHARS,
        description="One SELECT over the views of schema tenant_data (e.g. orders, customers).",
    )
    max_rows: int = Field(
        default=50, ge=1, le=10_000, description="Rows to return (the appliance caps it)."
    )


class SqlQuery(Tool[SqlQueryArgs]):
    name = "sql_query"
    description = (
        "Read the organisation's records with ONE read-only SQL SELECT over the views of schema "
        "tenant_data. No writes, no other schemas or system catalogs; a refusal lists the views."
    )
    arguments = SqlQueryArgs

    def __init__(
        self,
        sql: TenantSql,
        *,
        checks: SqlChecks | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._sql = sql
        # Shared with the policy gate when given (`agent.runtime`): the gate's parse is reused.
        self._checks = checks if checks is not None else SqlChecks()
        self._timeout_s = timeout_s
        self._max_rows = max_rows
        self._max_bytes = max_bytes

    async def inspect(self, sql: str) -> Accepted | Rejected:
        """The guard's answer for `sql` over the current catalog (what `run` would run)."""
        return self._checks.check(sql, await self._sql.catalog())

    async def run(self, args: SqlQueryArgs, ctx: ToolContext) -> ToolResult:
        verdict = await self.inspect(args.sql)
        if isinstance(verdict, Rejected):
            return ToolResult(data=refusal(verdict))
        limits = SqlLimits(
            timeout_s=self._timeout_s,
            max_rows=min(args.max_rows, self._max_rows),
            max_bytes=self._max_bytes,
        )
        outcome = await self._sql.run(ctx.tenant_id, verdict.sql, limits)
        if isinstance(outcome, SqlFailure):
            failure = {"code": outcome.code, "message": outcome.message}
            return ToolResult(data={"error": failure, "sql": verdict.sql})
        return ToolResult(
            data={
                "sql": verdict.sql,
                "views": list(verdict.views),
                "columns": list(outcome.columns),
                "rows": outcome.rows,
                "row_count": len(outcome.rows),
                "truncated": outcome.truncated is not None,
                "truncated_by": outcome.truncated,
                "elapsed_ms": outcome.elapsed_ms,
            }
        )
