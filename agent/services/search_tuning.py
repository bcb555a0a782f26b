"""Keeping every tenant's HNSW scans at the recall target as its documents change.

A tenant is measured (`SearchTuningStore.calibrate`) when it first holds enough chunks and again
whenever its chunk count has moved by more than `search_tune_drift`: by a worker's sweep, every
`search_tune_interval_s`, by `garrison calibrate`, and by `garrison reindex` after a rebuild.
The queries are what its searches will be asked: the inputs of its latest runs (each run
searches with its input first), embedded by the `embed` role, or questions an operator gives;
a tenant with fewer than MIN_QUESTIONS of them is measured with sums of its own chunks, a
slightly harder stand-in (`datastore.repos.search_tuning`). A sweep measures tenants one after
another until SWEEP_BUDGET_S is spent, so a worker holds up its claims for it only briefly; the
next sweep goes on where it stopped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from agent.domain import SearchCalibration
from agent.ports.documents import SearchTuningStore
from agent.ports.models import Embedder
from agent.services.search import MAX_QUERY_CHARS
from agent.settings import AgentSettings

RECALL_AT = 10
"""The k of the recall target, as TARGETS.md states it (recall@10)."""
MIN_QUESTIONS = 20
"""Fewer questions than this measure too little: sums of chunks stand in for them."""
SWEEP_BUDGET_S = 10.0
"""Start no further calibration in a sweep after this long (one takes seconds at 100k chunks)."""


class SearchTuning:
    def __init__(
        self, store: SearchTuningStore, embedder: Embedder, settings: AgentSettings
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._settings = settings

    async def calibrate(
        self,
        tenant_id: uuid.UUID,
        *,
        target: float | None = None,
        sample: int | None = None,
        questions: Sequence[str] = (),
    ) -> SearchCalibration | None:
        """Measure the tenant now (whatever its drift), with `questions` if given, else its
        latest runs' inputs; None when there is nothing to measure: no valid vector index, or
        too few chunks."""
        s = self._settings
        return await self._measure(
            tenant_id,
            s.search_recall_target if target is None else target,
            s.search_tune_sample if sample is None else sample,
            questions,
            None,
        )

    async def calibration(self, tenant_id: uuid.UUID) -> SearchCalibration | None:
        return await self._store.calibration(tenant_id)

    async def due(self) -> list[uuid.UUID]:
        """Tenants never measured or drifted since, large enough to be worth it."""
        s = self._settings
        return await self._store.drifted(s.search_tune_min_chunks, s.search_tune_drift)

    async def measurable(self) -> list[uuid.UUID]:
        """Every tenant large enough to measure, measured already or not."""
        # A negative drift: any count has moved "by more" than it, so none is left out.
        return await self._store.drifted(self._settings.search_tune_min_chunks, -1.0)

    async def sweep(self) -> int:
        """Measure the tenants that are due, within SWEEP_BUDGET_S; how many were measured."""
        s = self._settings
        started = time.monotonic()
        measured = 0
        for tenant_id in await self.due():
            if time.monotonic() - started > SWEEP_BUDGET_S:
                break
            found = await self._measure(
                tenant_id,
                s.search_recall_target,
                s.search_tune_sample,
                (),
                (s.search_tune_min_chunks, s.search_tune_drift),
            )
            measured += found is not None
        return measured

    async def _measure(
        self,
        tenant_id: uuid.UUID,
        target: float,
        sample: int,
        questions: Sequence[str],
        if_drifted: tuple[int, float] | None,
    ) -> SearchCalibration | None:
        texts = [q[:MAX_QUERY_CHARS] for q in questions if q.strip()][:sample] or (
            await self._store.recent_questions(tenant_id, sample, MAX_QUERY_CHARS)
        )
        vectors: list[list[float]] = []
        if len(texts) >= MIN_QUESTIONS:
            vectors = (await self._embedder.embed(texts)).vectors
        return await self._store.calibrate(
            tenant_id,
            target=target,
            sample=sample,
            k=RECALL_AT,
            if_drifted=if_drifted,
            questions=vectors,
        )
