"""The `ef_search` each tenant's HNSW scans use, measured on the tenant's own data.

How many candidates an HNSW scan must keep for a given recall depends on the data, not only on
the index: on the benchmark's corpus (bench/retrieval.py), stand-in vectors in 400 clusters
reach recall@10 0.99 at `ef_search` 64, while the same corpus embedded by MiniLM, whose chunks
crowd together, reaches 0.88 there (pgvector's default graph, m = 16). A fixed value is slow on
easy data or short of recall on crowded data, so a calibration measures each tenant and stores
the smallest value that reaches the target (`search_tuning`, read by `SearchRepository` with
its other per-tenant estimates).

A calibration, in one transaction holding a per-tenant advisory lock:
1. takes its queries: questions the tenant's agents were asked, embedded by the service
   (`agent.services.search_tuning`), or, for a tenant without enough of them, the normalised
   sum of two random chunks of its own (Source);
2. finds each query's true k nearest chunks by an exact scan of the tenant's rows;
3. for rising `ef_search` (EF_LADDER), runs the HNSW scan searches use and measures recall@k
   against (2), stopping at the first value that reaches the target.
Stored chunks themselves would be the wrong queries: each is a node of the graph whose edges
lead straight to its neighbours, so it is found at any `ef_search` (recall@10 0.99 at 40 on the
benchmark's corpus, where new chunks get 0.83). A sum of two chunks lies off the graph, inside
the data: on that corpus a little harder than new chunks (0.86 at 40), on uniformly random
vectors easier (each sum has two close neighbours). A stand-in, not a guarantee: questions are
the measure, and the sums only serve until a tenant has them.
Recall counts a hit as found when it is no farther than the true k-th neighbour, so exact ties
(duplicate chunks) are not misses. Each tried value is stored with its recall and median
latency, so `garrison calibrate` shows what the choice cost.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
import uuid
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from pgvector import HalfVector
from psycopg.rows import dict_row

from agent.domain import EfMeasure, SearchCalibration
from datastore.driver import AsyncPg
from datastore.schema.documents import HNSW_INDEX

EF_LADDER = (
    10, 12, 16, 20, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 200, 256, 320, 400, 500, 640,
    800,
)  # fmt: skip
"""The `ef_search` values tried, ascending, from the k measured (pgvector's default is 40, its
maximum 1000). Below 40 because crowded real embeddings reached recall@10 0.98 at 40 on the
benchmark's corpus: every candidate kept costs latency on the hot path (`bench/README.md`)."""
MAX_EF_SEARCH = 1000


def ef_for_rows(ef_search: int, rows: int, k: int) -> int:
    """The `ef_search` a scan asking for `rows` keeps, for a value calibrated at top-`k`.

    Recall follows the candidates kept per row asked for: a value that finds 96% of the top 10
    finds fewer of the top 50. Scaling it by `rows / k` keeps that ratio (never below the
    calibrated value, never past pgvector's maximum)."""
    return min(MAX_EF_SEARCH, max(ef_search, math.ceil(ef_search * rows / k)))


def ladder_for(k: int) -> list[int]:
    """The `ef_search` values a calibration at top-`k` tries: fewer candidates than rows asked
    for cannot fill the top k, so the ladder starts at k (pgvector's maximum past its top)."""
    return [ef for ef in EF_LADDER if ef >= k] or [MAX_EF_SEARCH]


TUNING_LOCK_KEY = 0x7475_6E65
"""With the tenant's hash: one calibration of a tenant at a time, across processes."""


class Source(StrEnum):
    QUESTIONS = "questions"
    """Questions the tenant's agents were asked (or an operator gave), embedded."""
    MIXED_CHUNKS = "mixed chunks"
    """The normalised sum of two random chunks of the tenant, for each query."""


_TIE = 1e-6
"""Distances this close count as equal (halfvec distances are computed in single precision)."""

_INDEX_VALID = (
    "SELECT count(*) FROM pg_index WHERE indexrelid = to_regclass(%(index)s) AND indisvalid"
)
_COUNT = "SELECT count(*) FROM chunks WHERE tenant_id = %(tenant)s"
# Ids first, then vectors: the random order sorts narrow rows, not 768-byte embeddings.
_SAMPLE = """
    SELECT id, embedding FROM chunks WHERE id IN (
        SELECT id FROM chunks WHERE tenant_id = %(tenant)s ORDER BY random() LIMIT %(n)s)"""
# The search's own shapes (`search_sql`): "+ 0" keeps the index out of the exact scan, and the
# relaxed-order index scan is sorted exactly outside.
_EXACT = """
    SELECT c.id, c.embedding <=> %(q)s AS d FROM chunks c WHERE c.tenant_id = %(tenant)s
    ORDER BY (c.embedding <=> %(q)s) + 0 LIMIT %(n)s"""
_INDEX = """
    SELECT n.id, n.d FROM (
        SELECT c.id, c.embedding <=> %(q)s AS d FROM chunks c WHERE c.tenant_id = %(tenant)s
        ORDER BY c.embedding <=> %(q)s LIMIT %(n)s) n
    ORDER BY n.d, n.id"""
_STORE = """
    INSERT INTO search_tuning
        (tenant_id, ef_search, k, recall, target, sample, source, chunks, ladder, measured_at)
    VALUES (%(tenant)s, %(ef)s, %(k)s, %(recall)s, %(target)s, %(sample)s, %(source)s,
            %(chunks)s, %(ladder)s, now())
    ON CONFLICT (tenant_id) DO UPDATE SET
        ef_search = excluded.ef_search, k = excluded.k, recall = excluded.recall,
        target = excluded.target,
        sample = excluded.sample, source = excluded.source, chunks = excluded.chunks,
        ladder = excluded.ladder, measured_at = excluded.measured_at
    RETURNING tenant_id, ef_search, k, recall, target, sample, source, chunks, ladder,
        measured_at"""
_SELECT_ONE = """
    SELECT tenant_id, ef_search, k, recall, target, sample, source, chunks, ladder, measured_at
    FROM search_tuning WHERE tenant_id = %(tenant)s"""
_DRIFTED = """
    SELECT d.tenant_id FROM documents d LEFT JOIN search_tuning t ON t.tenant_id = d.tenant_id
    WHERE %(tenant)s::uuid IS NULL OR d.tenant_id = %(tenant)s
    GROUP BY d.tenant_id, t.chunks
    HAVING sum(d.chunk_count) >= %(min_chunks)s
       AND (t.chunks IS NULL OR abs(sum(d.chunk_count) - t.chunks) > %(drift)s * t.chunks)
    ORDER BY d.tenant_id"""


async def calibrate(
    pg: AsyncPg,
    tenant_id: uuid.UUID,
    *,
    target: float,
    sample: int,
    k: int,
    if_drifted: tuple[int, float] | None = None,
    questions: Sequence[Sequence[float]] = (),
) -> SearchCalibration | None:
    """Measure and store the tenant's `ef_search` (module docstring); None, and nothing stored,
    when the vector index is missing or not valid, or the tenant has k chunks or fewer. `pg` is
    idle (no transaction open): this commits what it stores. With `if_drifted` (min_chunks,
    drift), the tenant is measured only if it still has drifted once the lock is held (the
    stored calibration is returned otherwise), so workers sweeping together measure it once."""
    params: dict[str, Any] = {"tenant": tenant_id}
    async with pg.transaction():
        await pg.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s::text))", (TUNING_LOCK_KEY, tenant_id)
        )
        if if_drifted is not None and not await drifted(pg, *if_drifted, tenant_id):
            # Measured by another worker while this one waited for the lock.
            return await stored(pg, tenant_id)
        # Without a valid index every search scans exactly: there is nothing to calibrate.
        if not await _scalar(pg, _INDEX_VALID, {"index": HNSW_INDEX}):
            return None
        chunks = await _scalar(pg, _COUNT, params)
        if chunks <= k:
            return None
        if questions:
            queries, source = [HalfVector(list(q)) for q in questions], Source.QUESTIONS
        else:
            queries, source = await _mixed_chunks(pg, tenant_id, sample), Source.MIXED_CHUNKS
        truths = [await _nearest(pg, _EXACT, tenant_id, q, k) for q in queries]
        # The index scan, whatever Postgres' planner would prefer: its cost estimate grows with
        # ef_search, and past some value on a small table it sorts a sequential scan instead,
        # which would measure an exact scan's recall and stop the ladder there.
        await pg.execute(
            "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"
            " SET LOCAL enable_sort = off"
        )
        ladder: list[EfMeasure] = []
        for ef in ladder_for(k):
            await pg.execute(f"SET LOCAL hnsw.ef_search = {int(ef)}")
            measure = await _measure(pg, tenant_id, queries, truths, k, ef)
            ladder.append(measure)
            if measure.recall >= target:
                break
        chosen = ladder[-1]
        values = {
            **params,
            "ef": chosen.ef_search,
            "k": k,
            "recall": round(chosen.recall, 4),
            "target": target,
            "sample": len(queries),
            "source": source.value,
            "chunks": chunks,
            "ladder": json.dumps([_ladder_json(m) for m in ladder]),
        }
        async with pg.cursor(row_factory=dict_row) as cur:
            await cur.execute(_STORE, values)
            row = await cur.fetchone()
    assert row is not None
    return from_row(row)  # as stored, so what later reads return is equal to it


async def _measure(
    pg: AsyncPg,
    tenant_id: uuid.UUID,
    queries: list[HalfVector],
    truths: list[list[tuple[int, float]]],
    k: int,
    ef: int,
) -> EfMeasure:
    recalls, latencies = [], []
    for q, truth in zip(queries, truths, strict=True):
        started = time.perf_counter()
        found = await _nearest(pg, _INDEX, tenant_id, q, k)
        latencies.append((time.perf_counter() - started) * 1000)
        recalls.append(recall(found, truth, k))
    return EfMeasure(ef, statistics.fmean(recalls), statistics.median(latencies))


async def _nearest(
    pg: AsyncPg, statement: str, tenant_id: uuid.UUID, q: HalfVector, k: int
) -> list[tuple[int, float]]:
    """The k nearest chunks to `q` as (id, distance), nearest first."""
    cur = await pg.execute(statement, {"tenant": tenant_id, "q": q, "n": k}, prepare=True)
    return [(int(r[0]), float(r[1])) for r in await cur.fetchall()]


async def _mixed_chunks(pg: AsyncPg, tenant_id: uuid.UUID, sample: int) -> list[HalfVector]:
    """`sample` queries, each the normalised sum of two random chunks of the tenant."""
    cur = await pg.execute(_SAMPLE, {"tenant": tenant_id, "n": 2 * sample})
    vectors = [row[1].to_list() for row in await cur.fetchall()]
    random.shuffle(vectors)  # the IN list comes back in physical order
    mixed = []
    for a, b in zip(vectors[0::2], vectors[1::2], strict=False):
        total = [x + y for x, y in zip(a, b, strict=True)]
        norm = math.sqrt(sum(x * x for x in total)) or 1.0
        mixed.append(HalfVector([x / norm for x in total]))
    return mixed


def recall(found: list[tuple[int, float]], truth: list[tuple[int, float]], k: int) -> float:
    """Share of the true k nearest found, where any row no farther than the true k-th counts
    (a duplicate of a true neighbour at the same distance is as good as it)."""
    if not truth:
        return 1.0
    bound = truth[-1][1] + _TIE
    return min(k, sum(1 for _, d in found if d <= bound)) / min(k, len(truth))


def from_row(row: dict[str, Any]) -> SearchCalibration:
    ladder = row["ladder"]
    if isinstance(ladder, str):
        ladder = json.loads(ladder)
    return SearchCalibration(
        tenant_id=row["tenant_id"],
        ef_search=row["ef_search"],
        recall=row["recall"],
        target=row["target"],
        sample=row["sample"],
        source=row["source"],
        chunks=row["chunks"],
        measured_at=row["measured_at"],
        ladder=tuple(EfMeasure(m["ef_search"], m["recall"], m["p50_ms"]) for m in ladder),
        k=row["k"],
    )


async def stored(pg: AsyncPg, tenant_id: uuid.UUID) -> SearchCalibration | None:
    async with pg.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SELECT_ONE, {"tenant": tenant_id})
        row = await cur.fetchone()
    return None if row is None else from_row(row)


async def drifted(
    pg: AsyncPg, min_chunks: int, drift: float, tenant_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Tenants (of all, or this one) never measured or measured at a chunk count that has since
    moved by more than `drift`, with at least `min_chunks` chunks."""
    params = {"min_chunks": min_chunks, "drift": drift, "tenant": tenant_id}
    cur = await pg.execute(_DRIFTED, params)
    return [row[0] for row in await cur.fetchall()]


_QUESTIONS = """
    SELECT left(input, %(chars)s) FROM runs WHERE tenant_id = %(tenant)s
    ORDER BY created_at DESC LIMIT %(n)s"""


async def recent_questions(pg: AsyncPg, tenant_id: uuid.UUID, count: int, chars: int) -> list[str]:
    """Up to `count` distinct inputs of the tenant's latest runs (each cut to `chars`): the
    questions its searches answer, newest first."""
    cur = await pg.execute(_QUESTIONS, {"tenant": tenant_id, "n": 4 * count, "chars": chars})
    seen: dict[str, None] = {}
    for row in await cur.fetchall():
        if row[0] and row[0].strip():
            seen.setdefault(row[0], None)
    return list(seen)[:count]


def _ladder_json(m: EfMeasure) -> dict[str, Any]:
    return {"ef_search": m.ef_search, "recall": round(m.recall, 4), "p50_ms": round(m.p50_ms, 3)}


async def _scalar(pg: AsyncPg, statement: str, params: dict[str, Any]) -> int:
    cur = await pg.execute(statement, params)
    row = await cur.fetchone()
    return int(row[0]) if row else 0
