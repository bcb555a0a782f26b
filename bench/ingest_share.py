"""The database's share of an ingestion's wall time: measured phases, the embedder's rate, and the
projection of a stand-in run to the real embedder's pace. Used by bench/retrieval.py.

A phase is summarised from the intervals the timers record (bench/corpus.py): the database is
"busy" for the union of its calls, and "on the critical path" for the part of that union that no
embedding call covered (a write overlapped by the next group's embedding costs no wall time,
unless it slows the embedder down by sharing its cores: only a run with the real embedder,
`--in-process`, shows that).

The projection takes a stand-in run's database costs (per-row writes without the index, the
index build, per-row writes into the live index) and the in-process embedder's rate probed in
the same run, and applies the pipeline's own rule (`agent.services.index_timing`) to find when
the build would start at that rate.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.services.index_timing import LoadRates, start_build_now
from agent.services.ingest import TAIL_CHUNKS
from bench.corpus import chunk_texts, exclusive_seconds, prose_chunks, union_seconds

Intervals = list[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Phase:
    """One ingestion, summarised."""

    chunks: int
    wall: float
    embed: float
    db: float
    """Union of every database call."""
    db_exposed: float
    """The part of `db` no embedding call overlapped."""
    writes: float
    lookups: float
    """The stored versions looked up before each group is embedded (`find_documents`)."""
    index: float
    index_exposed: float
    """The part of the index build no embedding call overlapped."""

    @staticmethod
    def of(chunks: int, wall: float, embed: Intervals, db: dict[str, Intervals]) -> Phase:
        every = [i for spans in db.values() for i in spans]
        index = db.get("build_vector_index", [])
        return Phase(
            chunks=chunks,
            wall=wall,
            embed=union_seconds(embed),
            db=union_seconds(every),
            db_exposed=exclusive_seconds(every, embed),
            writes=union_seconds(db.get("write_documents", [])),
            lookups=union_seconds(db.get("find_documents", [])),
            index=union_seconds(index),
            index_exposed=exclusive_seconds(index, embed),
        )


@dataclass(frozen=True, slots=True)
class Probe:
    """The in-process embedder alone, in this run: texts per second."""

    prose: float
    """Passages of ~190 tokens, the size ingestion's chunks have (as bench/embedders.py)."""
    corpus: float
    """This benchmark's own chunks (shorter: ~90 tokens), for comparing with a real run."""


async def probe(embedder: Any, texts: int, group: int) -> Probe:
    """Time `embedder` on `texts` prose passages and as many corpus chunks, in groups of
    `group` texts as the pipeline sends them, after one warm-up call (the model loads then)."""
    await embedder.embed(prose_chunks(group, seed=1))  # loads the model, warms its arenas
    prose, corpus = prose_chunks(texts), chunk_texts(texts, seed=12345)
    # Two rounds, taking turns, so that a burst of load on a shared machine hits both alike.
    half = texts // 2
    seconds = [0.0, 0.0]
    for part in (slice(0, half), slice(half, texts)):
        for which, sample in enumerate((prose, corpus)):
            seconds[which] += await _seconds(embedder, sample[part], group)
    return Probe(prose=len(prose) / seconds[0], corpus=len(corpus) / seconds[1])


async def _seconds(embedder: Any, texts: Sequence[str], group: int) -> float:
    started = time.perf_counter()
    for at in range(0, len(texts), group):
        await embedder.embed(texts[at : at + group])
    return time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class Projection:
    rate: float
    build_at: int | None
    """Rows embedded when the rule starts the concurrent build; None: after the load."""
    wall: float
    busy: float
    exposed: float


def project_load(load: Phase, live_write_per_row: float, rate: float, group: int) -> Projection:
    """A fresh load of `load.chunks` rows at `rate` texts/s, with the stand-in run's costs.

    On the critical path: the first group's lookup of stored versions (the others overlap the
    group before's embedding), the commit of the last (smallest) part after the last embedding,
    and whatever part of the index build and the row-by-row inserts after it does not fit in
    the embedding left when it starts.
    """
    n_total = load.chunks
    write = load.writes / n_total
    build_at = None
    for n in range(group, n_total, group):
        rates = LoadRates(n, n / rate, n, n * write)
        if start_build_now(rates, n, n_total - n, group):
            build_at = n
            break
    lookups = load.lookups * min(1.0, group / n_total)
    if build_at is None:
        busy = load.writes + load.index + lookups
        exposed = lookups + load.index + write * min(TAIL_CHUNKS, n_total)
    else:
        tail = n_total - build_at
        build = load.index * build_at / n_total
        database = build + tail * live_write_per_row
        busy = build_at * write + database + lookups
        exposed = lookups + max(0.0, database - tail / rate)
        exposed += live_write_per_row * min(TAIL_CHUNKS, tail)
    wall = n_total / rate + exposed
    return Projection(rate, build_at, wall, busy, exposed)


def project_add(add: Phase, rate: float, group: int) -> Projection:
    """Adding `add.chunks` rows to the live index at `rate` texts/s: each part's commit and
    lookup hide behind another part's embedding, but the last (smallest) commit and the first
    lookup."""
    per_row = add.writes / add.chunks
    first_lookup = add.lookups * min(1.0, group / add.chunks)
    exposed = first_lookup + per_row * min(TAIL_CHUNKS, add.chunks)
    wall = add.chunks / rate + exposed
    return Projection(rate, None, wall, add.db, exposed)
