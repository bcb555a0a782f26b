"""Choosing how a vector search runs: an iterative HNSW index scan or an exact scan.

The HNSW index covers every tenant's chunks, so when the tenant and filter leave a fraction `s`
of the table in scope, an index scan must visit about `candidates / s` tuples (never fewer than
`ef_search`) before `candidates` of them match; each visit costs a walk over graph neighbours. An
exact scan computes one distance per row in scope instead. Whichever is estimated cheaper wins,
and the index is never chosen when the visits it would need approach the cap on an iterative scan
(`hnsw.max_scan_tuples`), where it would stop short of k rows. The inputs are estimates from
statistics (`SearchRepository` says which); a wrong guess costs time, never rows, because an
index scan that comes back short is retried exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Strategy(StrEnum):
    HNSW = "hnsw"
    EXACT = "exact"


@dataclass(frozen=True, slots=True)
class PlannerCosts:
    ef_search: int
    max_scan_tuples: int
    visit_cost: float = 5.0
    """One HNSW visit in units of one exactly scanned row (bench/retrieval.py measures both)."""
    scan_cap_share: float = 0.5
    """Use at most this share of `max_scan_tuples`, leaving room for filters that correlate
    badly with distance."""


def choose_strategy(
    in_scope: float, table_rows: float, candidates: int, costs: PlannerCosts
) -> Strategy:
    """The cheaper way to find `candidates` nearest rows among `in_scope` of `table_rows`."""
    if in_scope <= max(candidates, costs.ef_search):
        return Strategy.EXACT
    selectivity = min(1.0, in_scope / max(table_rows, in_scope, 1.0))
    visits = max(float(costs.ef_search), candidates / selectivity)
    if visits > costs.max_scan_tuples * costs.scan_cap_share:
        return Strategy.EXACT
    return Strategy.EXACT if in_scope <= visits * costs.visit_cost else Strategy.HNSW
