"""The rule that times a bulk load's index build: after the load, or hidden behind embedding."""

from __future__ import annotations

from agent.services.index_timing import (
    BUILD_S,
    INSERT_S,
    MIN_MEASURED_ROWS,
    SLACK,
    LoadRates,
    embedding_bound,
    start_build_now,
)

GROUP = 256
WRITE_S = 100e-6
"""A row written without the index, as measured on the bench."""


def rates(embed_s_per_row: float, rows: int = 10_000) -> LoadRates:
    return LoadRates(rows, rows * embed_s_per_row, rows, rows * WRITE_S)


def first_start(embed_s_per_row: float, total: int) -> int | None:
    """The row count at which a load of `total` rows starts its build; None: after the load."""
    for rows in range(GROUP, total + GROUP, GROUP):
        if start_build_now(rates(embed_s_per_row, rows), rows, total - rows, GROUP):
            return rows
    return None


def test_a_fast_embedder_leaves_the_build_for_the_end() -> None:
    # A GPU engine or the bench's stand-in: the database could not keep up inserting row by row.
    assert not embedding_bound(rates(0.3e-3))
    assert first_start(0.3e-3, 100_000) is None
    # Right at the edge where row-by-row inserts would still fall behind, also the end.
    assert first_start(SLACK * (WRITE_S + INSERT_S) * 0.999, 100_000) is None


def test_a_cpu_embedder_starts_the_build_while_the_last_groups_embed() -> None:
    per_row = 11e-3  # the in-process MiniLM int8, ~90 texts/s
    start = first_start(per_row, 100_000)
    assert start is not None
    # Late: most rows go in with the cheap bulk build. At m=24 a row inserted into the live
    # graph costs ~7x its share of the build, so the build starts with a third of the rows left.
    assert 60_000 < start < 100_000
    tail = 100_000 - start
    database = BUILD_S * start + (WRITE_S + INSERT_S) * tail
    assert SLACK * database <= tail * per_row + GROUP * per_row  # it still hides, with slack


def test_the_slower_the_embedder_the_fewer_rows_join_the_graph_one_by_one() -> None:
    rates_s = (9e-3, 11e-3, 20e-3, 50e-3)
    starts = [s for s in (first_start(per_row, 100_000) for per_row in rates_s) if s is not None]
    assert len(starts) == len(rates_s)
    assert starts == sorted(starts)
    for per_row, start in zip(rates_s, starts, strict=True):
        tail = 100_000 - start
        # Started one group before the database's work would no longer fit behind embedding.
        assert SLACK * (BUILD_S * start + (WRITE_S + INSERT_S) * tail) <= tail * per_row
        later = tail - GROUP
        assert SLACK * (BUILD_S * (start + GROUP) + (WRITE_S + INSERT_S) * later) > later * per_row


def test_too_few_measured_rows_decide_nothing() -> None:
    few = LoadRates(MIN_MEASURED_ROWS - 1, 1.0, MIN_MEASURED_ROWS, 0.001)
    assert not embedding_bound(few)
    assert not start_build_now(few, 1000, 0, GROUP)


def test_a_load_past_its_estimate_starts_at_once_when_embedding_bound() -> None:
    assert start_build_now(rates(11e-3), 5000, -10, GROUP)
    assert not start_build_now(rates(0.1e-3), 5000, -10, GROUP)
