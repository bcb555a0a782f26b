"""The views an sql_query reads, for the policy: the SQL guard's parse, done once.

A rule may condition on the views a query reads (`part = "view"`, `agent.policy.document`), and
`sql` is free text, so only a parse can say which. The gate asks the guard with the catalog it
read when the run was claimed, before the policy judges the call; the tool asks it again with the
catalog it reads to run the query, right after. Both ask through one `agent.sqlguard.SqlChecks`,
which remembers the answer for the same text and catalog object: the query is parsed once.
A query the guard refuses is refused at the gate with the guard's own result, exactly what the
tool would answer, so no query runs whose views the policy did not see (not even one a catalog
read later would accept).

Only sql_query has views, and only a policy with a `view` condition needs them: every other call,
and every run under another policy, pays nothing.
"""

from __future__ import annotations

from agent.domain import JSON, AgentDefinition
from agent.policy.compiled import EffectivePolicy
from agent.policy.document import VIEW_TOOL
from agent.ports import SqlCatalog, TenantSql
from agent.sqlguard import Rejected, SqlChecks


async def catalog_for(
    policy: EffectivePolicy, agent: AgentDefinition, sql: TenantSql | None
) -> SqlCatalog | None:
    """The catalog a run's queries are judged against: read only when the policy has a `view`
    condition and the agent may query. None otherwise, or without SQL (then `view` conditions
    fail closed)."""
    if sql is None or not policy.reads_views or VIEW_TOOL not in agent.allowed_tools:
        return None
    return await sql.catalog()


def views_of(
    tool: str, arguments: JSON, catalog: SqlCatalog | None, checks: SqlChecks
) -> tuple[str, ...] | Rejected | None:
    """The views the call's SQL reads, in first-mention order; the guard's refusal; or None
    when not known (not an sql_query, or no catalog)."""
    sql = arguments.get("sql")
    if tool != VIEW_TOOL or catalog is None or not isinstance(sql, str):
        return None
    verdict = checks.check(sql, catalog)
    return verdict if isinstance(verdict, Rejected) else verdict.views
