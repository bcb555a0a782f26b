"""A real `garrison worker` process stopped with SIGTERM in the middle of a step: the step
finishes and commits once, the lease is handed back, the process exits 0, and another worker
resumes the run at once, from the next step."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable

from agent.domain import Run, RunStatus, Step
from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.cli.conftest import Proc, in_services, subprocess_env, tenant

MODEL_DELAY_S = 3.0
"""How long the scripted model takes to answer step 1: the signal lands inside this window."""


def ledger(settings: Settings, run_id: uuid.UUID) -> tuple[Run, list[Step]]:
    async def read(services: Services) -> tuple[Run, list[Step]]:
        return await services.runs.get(run_id, None), await services.runs.steps(run_id, None)

    return in_services(settings, read)


def test_sigterm_mid_step_commits_the_step_once_and_hands_the_run_over(
    spawn: Callable[..., Proc],
    settings: Settings,
    cli_env: dict[str, str],
    scripted_model: ScriptedModelServer,
) -> None:
    acme = tenant(settings)
    run_id = in_services(
        settings, lambda s: s.runs.submit(acme.principal, "assistant", "How much leave?")
    ).id
    scripted_model.enqueue(
        {"tool": "search_documents", "arguments": {"query": "annual leave"}},
        delay_s=MODEL_DELAY_S,
    )
    worker = spawn("worker", "--concurrency", "1", env=subprocess_env(**cli_env))
    worker.wait_for(lambda: len(scripted_model.chat_requests) == 1, 60, "the step's model call")

    signalled = time.monotonic()
    assert worker.stop(signal.SIGTERM, timeout=30) == 0, worker.describe()
    stopped_after = time.monotonic() - signalled
    assert "stopping cleanly" in worker.stdout, worker.describe()
    assert "stopped" in worker.stdout.splitlines()[-1], worker.describe()
    # It waited for the model's answer rather than dropping the step.
    assert stopped_after > MODEL_DELAY_S / 3, stopped_after

    run, steps = ledger(settings, run_id)
    assert run.status == RunStatus.RUNNING
    assert run.step_count == 1
    assert [(s.number, s.tool) for s in steps] == [(1, "search_documents")]
    assert run.attempts == 1  # claims are counted; the release keeps it off the path to parking
    assert len(scripted_model.chat_requests) == 1

    # No lease to wait out: another worker claims it at once and continues at step 2.
    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": "30 days"}})

    async def resume(services: Services) -> Run | None:
        claimed = await services.store.runs.claim_next("successor", 30, 3)
        if claimed is None:
            return None
        return await services.run_loop().drive(claimed, "successor")

    final = in_services(settings, resume)
    assert final is not None, "the run was still leased to the stopped worker"
    assert final.status == RunStatus.SUCCEEDED
    assert final.output == "30 days"
    _, steps = ledger(settings, run_id)
    assert [(s.number, s.tool) for s in steps] == [(1, "search_documents"), (2, "finish")]
    assert len(scripted_model.chat_requests) == 2  # step 1 was never asked again


def test_sigterm_while_idle_exits_at_once(
    spawn: Callable[..., Proc], cli_env: dict[str, str]
) -> None:
    worker = spawn("worker", "--json", env=subprocess_env(**cli_env))
    worker.wait_for(lambda: '"ready"' in worker.stdout, 60, "the ready document")
    signalled = time.monotonic()
    assert worker.stop(signal.SIGTERM, timeout=30) == 0, worker.describe()
    assert time.monotonic() - signalled < 5
