"""Agent runs through the API on the real vLLM engines: a real model's answer, real token counts
on every step, and a clear failure code (after a bounded wait) when the engine hangs."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from agent import codes
from agent.api.app import create_app
from agent.domain import Role
from agent.runtime import Services, Settings, open_services
from agent.settings import AgentSettings, ApiSettings
from datastore.settings import DatabaseSettings
from serving.engine import pids
from serving.settings import ServingSettings
from tests.api.conftest import live_server
from tests.engine.conftest import Engines

pytestmark = pytest.mark.engine

LEAVE = (
    "# Annual leave\n\nEvery employee gets 27 days of paid annual leave per calendar year. "
    "Up to 5 unused days can be carried over to the next year."
)


def engine_settings(
    engines: Engines, database_url: str, tmp_path: Path, timeout: float
) -> Settings:
    gemma, minilm = engines.gemma, engines.minilm
    return Settings(
        database=DatabaseSettings(database_url=database_url, data_dir=tmp_path / "data"),
        serving=ServingSettings(
            chat_url=engines.url(gemma),
            chat_model=gemma.served_name,
            embed_url=engines.url(minilm),
            embed_model=minilm.served_name,
            model_timeout_s=timeout,
            model_retries=1,
        ),
        agent=AgentSettings(poll_interval_s=0.05),
        api=ApiSettings(port=0),
    )


async def seed(services: Services) -> str:
    await services.tenancy.create_tenant("engine", actor="test")
    # The 270M base model cannot plan tool use; it answers from the retrieved passages.
    await services.tenancy.put_agent(
        "engine",
        "assistant",
        instructions="Answer the question from the passages. Be brief.",
        tools=["finish"],
        actor="test",
    )
    tenant = await services.tenancy.require_tenant("engine")
    await services.documents.ingest(tenant.id, title="Annual leave policy", text=LEAVE)
    _key, secret = await services.keys.create("engine", "k", [Role.CLIENT], actor="test")
    return secret


async def test_an_agent_run_completes_on_the_real_engine(
    engines: Engines, database_url: str, tmp_path: Path
) -> None:
    settings = engine_settings(engines, database_url, tmp_path, timeout=120)
    services = await open_services(settings, database_url, upgrade=False)
    try:
        secret = await seed(services)
        auth = {"Authorization": f"Bearer {secret}"}
        with live_server(create_app(settings, database_url)) as base:
            async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as http:
                created = await http.post(
                    "/v1/runs", json={"agent": "assistant", "input": "How many days of leave?"}
                )
                assert created.status_code == 202, created.text
                run_id = created.json()["id"]
                assert await services.worker().run_until_idle() == 1
                run = (await http.get(f"/v1/runs/{run_id}")).json()
                steps = (await http.get(f"/v1/runs/{run_id}/steps")).json()["data"]
    finally:
        await services.aclose()
    assert run["status"] == "succeeded", run
    assert run["output"].strip()
    assert run["usage"]["prompt_tokens"] > 100  # instructions, schema and a passage
    assert run["usage"]["completion_tokens"] > 0
    assert len(steps) == 1
    step = steps[0]
    assert step["tool"] == "finish"
    assert step["usage"]["prompt_tokens"] > 0
    assert step["usage"]["completion_tokens"] > 0
    assert step["context"]["passages"][0]["title"] == "Annual leave policy"
    assert step["decision"]["deployment"] == "chat"
    assert step["timings"]["model_ms"] > 0


async def test_a_hung_engine_fails_the_run_with_a_clear_code(
    engines: Engines, database_url: str, tmp_path: Path
) -> None:
    settings = engine_settings(engines, database_url, tmp_path, timeout=2)
    services = await open_services(settings, database_url, upgrade=False)
    record = engines.manager.status(engines.gemma).record
    assert record is not None
    try:
        secret = await seed(services)
        principal = await services.keys.authenticate(secret)
        run = await services.runs.submit(principal, "assistant", "How many days of leave?")
        pids.signal_group(record.pid, signal.SIGSTOP)
        try:
            assert await services.worker().run_until_idle() == 1
        finally:
            pids.signal_group(record.pid, signal.SIGCONT)
        final = await services.runs.get(run.id, principal.tenant_id)
        steps = await services.runs.steps(run.id, principal.tenant_id)
    finally:
        await services.aclose()
    assert final.status == "failed"
    assert final.failure_code == codes.MODEL_TIMEOUT
    assert steps[-1].error_code == codes.MODEL_TIMEOUT
