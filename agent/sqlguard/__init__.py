"""The SQL guard: parse LLM-issued SQL with Postgres' grammar and accept one read-only SELECT.

`check(sql, catalog)` answers `Accepted` (with the SQL to run, rendered from the checked tree)
or `Rejected` (a stable reason and a message the model can act on). It knows nothing about
connections: `agent.tools.sql_query` runs what it accepts through the `TenantSql` port.
`SqlChecks` is the same check remembering its recent answers, for callers that share a parse.
"""

from agent.sqlguard.checks import SqlChecks
from agent.sqlguard.guard import MAX_SQL_CHARS, Accepted, Rejected, check

__all__ = ["MAX_SQL_CHARS", "Accepted", "Rejected", "SqlChecks", "check"]
