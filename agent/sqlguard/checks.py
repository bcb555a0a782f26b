"""The guard's recent answers, for callers that check the same query twice.

The policy gate checks an sql_query to learn the views it reads (`agent.policy.sql_views`) right
before the tool checks it again to run it. Given the same `SqlChecks`, which the composition root
(`agent.runtime.Services`) makes once and hands to both, the second check is a lookup, not a
parse. `agent.sqlguard.check` itself stays pure; the memory is this object's, bounded, and dies
with its owner.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from agent.ports import SqlCatalog
from agent.sqlguard.guard import Accepted, Rejected, check

REMEMBERED: Final = 256
"""Answers kept by default (each holds at most `MAX_SQL_CHARS` of text and a rendering)."""


class SqlChecks:
    """`check`, remembering its last `size` answers by query text and catalog object."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self._size = size
        self._answers: OrderedDict[str, tuple[SqlCatalog, Accepted | Rejected]] = OrderedDict()

    def check(self, sql: str, catalog: SqlCatalog) -> Accepted | Rejected:
        known = self._answers.get(sql)
        # The very catalog object, not an equal one: a catalog read again may differ, and an
        # identity test costs nothing (the catalog's source hands out one object while it is
        # fresh).
        if known is not None and known[0] is catalog:
            self._answers.move_to_end(sql)
            return known[1]
        answer = check(sql, catalog)
        self._answers[sql] = (catalog, answer)
        self._answers.move_to_end(sql)
        if len(self._answers) > self._size:
            self._answers.popitem(last=False)
        return answer
