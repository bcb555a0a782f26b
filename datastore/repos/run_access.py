"""Which runs a caller with access tags sees, as SQL conditions on a `runs.access_tags` column.

The rule is `agent.services.access.sees_run`: a key without access tags sees every run of its
tenant; a restricted key only the runs submitted under a scope within its own tags, since only
those can have retrieved nothing but documents it may see. The conditions go beside the tenant
predicate of each read (of runs, and of the approvals and side effects of runs), so a list is
never cut short of its limit by runs dropped after the query.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, ColumnElement


def runs_within(
    column: Column[Any], access_tags: tuple[str, ...] | None
) -> list[ColumnElement[bool]]:
    """The conditions a visible run's `access_tags` column meets (none: the whole tenant)."""
    if access_tags is None:
        return []
    # NULL is a run of the whole tenant, which may have retrieved any document: hidden, said
    # outright rather than left to how `NULL <@ x` happens to evaluate in a WHERE.
    return [column.is_not(None), column.contained_by(list(access_tags))]
