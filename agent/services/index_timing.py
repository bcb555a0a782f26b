"""When a bulk load builds its vector index: after the load, or while the last groups are embedded.

A bulk load drops the HNSW index and COPYs its rows without it: a row costs ~0.1 ms to write
that way, against ~4 ms to insert it into a live graph of 100k rows (on a 2-core machine).
Building the graph over every row at once is the cheapest in total (~0.6 ms a row with
pgvector's parallel build), but whatever the build takes after the last
group is added to the load's wall time: nothing is left to embed by then. When embedding is the
slower side (the in-process CPU embedder: ~11 ms a text), the build can start while the last
groups are still being embedded, concurrently (writers go on; the rows written meanwhile join
the graph one by one), so that the build and those inserts both happen in the embedder's shadow.

The rule, asked after every group with what the run has measured so far:

- `r` the embedding rate (rows per second spent in the embedder) and `w` the cost of writing a
  row without the index (seconds of database call per row);
- if `SLACK * (w + INSERT_S) >= 1 / r`, the database could not keep up with the embedder while
  inserting rows into the graph one by one (a GPU engine, the bench's stand-in): the build waits
  for the end, where it is the cheapest and embedding was never the bottleneck anyway;
- otherwise the build starts at the first group after which waiting one more group would leave
  too little embedding to hide it: with `n` rows embedded, `m` still expected and `g` the group
  size, when `SLACK * (BUILD_S * (n + g) + (w + INSERT_S) * (m - g)) > (m - g) / r`.

`BUILD_S` and `INSERT_S` are the graph's costs measured at 100k rows of MiniLM embeddings
(pgvector 0.8.6, m=24, ef_construction=128 as `datastore.schema.documents` builds it,
halfvec(384), 2 parallel workers, 2 cores); they grow slowly with the graph. `SLACK` covers the
build sharing the cores with the embedder, which it slows.
Pure: no I/O, so the decision is tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

BUILD_S = 600e-6
"""Seconds of wall time per row for `CREATE INDEX` over 100k rows (43-70 s measured here, on a
machine whose timings vary by half from one run to the next)."""
INSERT_S = 4.0e-3
"""Seconds per row inserted into a live 100k-row graph (COPY with the index in place: 1,000
rows in 4.0 s)."""
SLACK = 2.0
"""Safety factor on the database's estimated work: it runs beside the embedder on few cores."""
MIN_MEASURED_ROWS = 64
"""Rates measured over fewer rows than this are noise. The pipeline leaves the first embedding
call out of them: that one may have loaded the model."""


@dataclass(frozen=True, slots=True)
class LoadRates:
    """What a bulk load has measured about itself so far: samples, not necessarily every row."""

    embedded_rows: int
    embed_s: float
    """Time spent inside the embedder for those rows."""
    written_rows: int
    write_s: float
    """Time spent in the database writing those rows (without the vector index)."""


def embedding_bound(rates: LoadRates) -> bool:
    """Whether the database inserting into the graph row by row would still wait for the
    embedder: only then can the build hide behind embedding."""
    if rates.embedded_rows < MIN_MEASURED_ROWS or rates.written_rows < MIN_MEASURED_ROWS:
        return False
    per_row_embed = rates.embed_s / rates.embedded_rows
    per_row_write = rates.write_s / rates.written_rows
    return SLACK * (per_row_write + INSERT_S) < per_row_embed


def start_build_now(rates: LoadRates, rows: int, remaining_rows: int, group_rows: int) -> bool:
    """Whether to start building the index concurrently now rather than after the next group.

    `rows` have been embedded so far, `remaining_rows` are still expected (an estimate; at or
    below zero the load is at or past it) and a group adds about `group_rows`.
    """
    if not embedding_bound(rates):
        return False
    if remaining_rows <= group_rows:
        return True
    per_row_embed = rates.embed_s / rates.embedded_rows
    per_row_write = rates.write_s / rates.written_rows
    n_next = rows + group_rows
    m_next = remaining_rows - group_rows
    database = BUILD_S * n_next + (per_row_write + INSERT_S) * m_next
    return SLACK * database > m_next * per_row_embed
