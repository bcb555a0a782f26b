"""32 runs at once on one API key's daily token budget, through one worker driving all of them:
the budget is never overspent, every reservation is settled, and the use recorded is exactly
what the model reported."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from agent import codes
from agent.budgets.gate import estimate_prompt_tokens
from agent.budgets.model import Limits, Period
from agent.domain import Run, RunStatus
from agent.runtime import Services, Settings, open_services
from agent.worker import Worker
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import make_tenant

RUNS = 32
STEPS = 3  # search, search, finish


class MeteredModel:
    """Answers each run's steps from the conversation's length, tallying the usage the scripted
    server reports (the words of the prompt and of the answer)."""

    def __init__(self, server: ScriptedModelServer) -> None:
        self.used = 0
        self.calls = 0
        self.largest_reservation = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        server.set_responder(self._answer)

    def _answer(self, request: dict[str, Any]) -> str:
        messages = request["messages"]
        step = (len(messages) - 2) // 2 + 1
        if step < STEPS:
            action = {"tool": "search_documents", "arguments": {"query": f"topic {step}"}}
        else:
            action = {"tool": "finish", "arguments": {"answer": "done"}}
        content = json.dumps(action)
        prompt = sum(len(str(m.get("content", "")).split()) for m in messages)
        reservation = estimate_prompt_tokens(messages, 3.0) + request["max_tokens"]
        with self._lock:
            self.used += prompt + len(content.split())
            self.calls += 1
            self.largest_reservation = max(self.largest_reservation, reservation)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(0.2)  # keeps many calls in flight at once
        with self._lock:
            self.in_flight -= 1
        return content


@pytest.fixture
async def wide(settings: Settings, database_url: str) -> AsyncIterator[Services]:
    """Services whose pool and worker can hold 32 runs in flight."""
    wide_settings = settings.model_copy(
        update={
            "database": settings.database.model_copy(update={"db_pool_size": 40}),
            "agent": settings.agent.model_copy(
                update={"worker_concurrency": RUNS, "lease_seconds": 60.0}
            ),
        }
    )
    svc = await open_services(wide_settings, database_url, upgrade=False)
    yield svc
    await svc.aclose()


async def test_32_concurrent_runs_never_overspend_a_daily_key_budget(
    wide: Services, scripted_model: ScriptedModelServer
) -> None:
    services = wide
    model = MeteredModel(scripted_model)
    fx = await make_tenant(services, "acme")

    # One run without a budget, to size the budget to about half of what 32 runs would use.
    calibration = await services.runs.submit(fx.principal, "assistant", "calibration")
    assert await services.worker().run_until_idle() == 1
    assert (await services.runs.get(calibration.id, fx.tenant.id)).status == RunStatus.SUCCEEDED
    per_run, model.used, model.calls, model.most_in_flight = model.used, 0, 0, 0
    limit = per_run * RUNS // 2
    await services.budgets.set(
        "acme",
        period=Period.DAY,
        limits=Limits(tokens=limit),
        key=str(fx.principal.key_id),
        actor="test",
    )

    runs = [
        await services.runs.submit(fx.principal, "assistant", f"question {n}") for n in range(RUNS)
    ]
    worker = Worker(services.store.runs, services.run_loop(), services.settings.agent, "wide")
    task = asyncio.create_task(worker.run_forever())
    deadline = time.monotonic() + 120
    most_held = 0
    try:
        async with services.store.engine.connect() as conn:
            while worker.completed < RUNS:
                assert time.monotonic() < deadline, f"only {worker.completed}/{RUNS} runs ended"
                count = text("SELECT count(*) FROM budget_reservations")
                most_held = max(most_held, (await conn.execute(count)).scalar() or 0)
                await conn.rollback()  # a fresh snapshot for the next look
                await asyncio.sleep(0.01)
    finally:
        worker.stop()
        await task

    finals = [await services.runs.get(r.id, fx.tenant.id) for r in runs]
    by_status = {s: sum(1 for f in finals if f.status == s) for s in RunStatus}
    assert by_status[RunStatus.SUCCEEDED] + by_status[RunStatus.BUDGET_EXHAUSTED] == RUNS
    assert by_status[RunStatus.SUCCEEDED] >= 1
    assert by_status[RunStatus.BUDGET_EXHAUSTED] >= 1
    assert all(
        f.failure_code == codes.BUDGET_EXHAUSTED
        for f in finals
        if f.status == RunStatus.BUDGET_EXHAUSTED
    )

    [status] = await services.budgets.show("acme")
    assert status.usage is not None
    # Every call's usage was charged, exactly, and every reservation was settled.
    assert status.usage.tokens_used == model.used
    assert status.usage.tokens_reserved == 0
    async with services.store.engine.connect() as conn:
        held = (await conn.execute(text("SELECT count(*) FROM budget_reservations"))).scalar()
    assert held == 0
    # Never past the limit by more than one reservation (here: not at all, since no call used
    # more than it reserved).
    assert model.used <= limit + model.largest_reservation
    assert model.used <= limit
    # And the budget was spent, not refused early: a run ends only when a call's worst case no
    # longer fits beside what was really used (calls in flight are waited for).
    assert model.used > limit - model.largest_reservation
    # The runs really raced: most were under way at the same moment, several reservations were
    # held at once (as many as the budget had room for), and the model served several calls
    # at once.
    assert most_overlapping(finals) >= RUNS // 2
    assert most_held >= 3, most_held
    assert model.most_in_flight >= 3, model.most_in_flight


def most_overlapping(runs: list[Run]) -> int:
    """The most runs that were between their start and their end at one instant."""
    edges = sorted(
        [(r.started_at, 1) for r in runs if r.started_at]
        + [(r.finished_at, -1) for r in runs if r.finished_at]
    )
    live = most = 0
    for _at, change in edges:
        live += change
        most = max(most, live)
    return most
