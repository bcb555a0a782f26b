"""Runs routed through a models file: each step records the deployment that answered, a dead
primary does not fail the run, and the registry syncs into the database with an audit entry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from agent.domain import RunStatus
from agent.runtime import Services, Settings, open_services
from serving.settings import ServingSettings
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import make_tenant
from tests.modelsfile import external, write_models_file
from tests.serving.conftest import closed_port_url


def finish(answer: str) -> dict[str, object]:
    return {"tool": "finish", "arguments": {"answer": answer}}


@pytest.fixture
def second_model() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as server:
        yield server


@asynccontextmanager
async def routed_services(
    settings: Settings, database_url: str, models_file: Path
) -> AsyncIterator[Services]:
    serving = ServingSettings(models_file=models_file, model_timeout_s=5.0)
    services = await open_services(
        settings.model_copy(update={"serving": serving}), database_url, upgrade=False
    )
    try:
        yield services
    finally:
        await services.aclose()


@pytest.fixture
async def two_deciders(
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    scripted_model: ScriptedModelServer,
    second_model: ScriptedModelServer,
) -> AsyncIterator[Services]:
    path = write_models_file(
        tmp_path / "models.toml",
        external("primary", scripted_model.base_url),
        external("fallback", second_model.base_url),
        external("vectors", second_model.base_url, ("embed",)),
        routes={"decide": ["primary", "fallback"]},
    )
    async with routed_services(settings, database_url, path) as services:
        yield services


async def test_each_step_records_the_deployment_that_answered(
    two_deciders: Services, scripted_model: ScriptedModelServer
) -> None:
    fx = await make_tenant(two_deciders, "acme")
    scripted_model.enqueue("not an action")
    scripted_model.enqueue({"tool": "search_documents", "arguments": {"query": "leave"}})
    scripted_model.enqueue(finish("30 days"))
    run = await two_deciders.runs.submit(fx.principal, "assistant", "How much leave?")
    assert await two_deciders.worker().run_until_idle() == 1
    final = await two_deciders.runs.get(run.id, fx.tenant.id)
    steps = await two_deciders.runs.steps(run.id, fx.tenant.id)

    assert final.status == RunStatus.SUCCEEDED
    assert [s.decision["deployment"] for s in steps] == ["primary", "primary"]
    attempts = steps[0].decision["attempts"]
    assert [a["deployment"] for a in attempts] == ["primary", "primary"]
    assert "error" in attempts[0]


async def test_a_primary_down_from_the_start_still_serves_runs(
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    second_model: ScriptedModelServer,
) -> None:
    path = write_models_file(
        tmp_path / "models.toml",
        external("primary", closed_port_url()),
        external("fallback", second_model.base_url),
        external("vectors", second_model.base_url, ("embed",)),
    )
    async with routed_services(settings, database_url, path) as services:
        fx = await make_tenant(services, "acme")
        await services.documents.ingest(
            fx.tenant.id, title="Leave", text="Employees get 30 days of annual leave."
        )
        second_model.enqueue(finish("30 days"))
        run = await services.runs.submit(fx.principal, "assistant", "How much leave?")
        assert await services.worker().run_until_idle() == 1
        final = await services.runs.get(run.id, fx.tenant.id)
        [step] = await services.runs.steps(run.id, fx.tenant.id)
        assert final.status == RunStatus.SUCCEEDED, final.failure_detail
        assert final.output == "30 days"
        assert step.decision["deployment"] == "fallback"
        assert step.context["passages"][0]["title"] == "Leave"

        health = {c.name: c for c in await services.health(timeout_s=1.0)}
        assert health["chat_model"].ok
        assert "(deployment fallback)" in health["chat_model"].detail


async def test_sync_stores_the_registry_and_audits_changes(
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    scripted_model: ScriptedModelServer,
) -> None:
    url = scripted_model.base_url
    path = tmp_path / "models.toml"
    write_models_file(path, external("a", url), external("b", url), external("c", url))
    async with routed_services(settings, database_url, path) as services:
        first = await services.catalog.sync(actor="test")
        assert (first.added, first.changed, first.removed) == (("a", "b", "c"), (), ())
        again = await services.catalog.sync(actor="test")
        assert again.unchanged == ("a", "b", "c")
        assert (again.added, again.changed, again.removed) == ((), (), ())

    write_models_file(path, external("a", url, max_in_flight=2), external("d", url))
    async with routed_services(settings, database_url, path) as services:
        report = await services.catalog.sync(actor="test")
        assert (report.added, report.changed, report.removed) == (("d",), ("a",), ("b", "c"))
        stored = await services.catalog.list_deployments()
        assert [(r.name, r.roles, r.placement_kind) for r in stored] == [
            ("a", ("decide",), "external"),
            ("d", ("decide",), "external"),
        ]
        assert stored[0].spec["max_in_flight"] == 2
        entries = [
            e for e in await services.store.audit.list_entries(None, 10)
            if e.action == "models.sync"
        ]  # fmt: skip
        # Two changes were audited; the no-op sync in between was not.
        assert [e.detail for e in entries] == [
            {"added": ["d"], "changed": ["a"], "removed": ["b", "c"]},
            {"added": ["a", "b", "c"], "changed": [], "removed": []},
        ]


async def test_runs_wait_for_a_model_slot_instead_of_failing(
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    scripted_model: ScriptedModelServer,
) -> None:
    """Back-pressure from the in-flight cap delays accepted runs; it never fails them."""
    path = write_models_file(
        tmp_path / "models.toml",
        external("only", scripted_model.base_url, max_in_flight=1),
        external("vectors", scripted_model.base_url, ("embed",)),
    )
    for i in range(3):
        scripted_model.enqueue(finish(f"answer {i}"), delay_s=0.3)
    async with routed_services(settings, database_url, path) as services:
        fx = await make_tenant(services, "busy")
        runs = [await services.runs.submit(fx.principal, "assistant", f"q{i}") for i in range(3)]
        workers = [services.worker(f"w{i}") for i in range(3)]
        await asyncio.gather(*(w.run_until_idle() for w in workers))
        finals = [await services.runs.get(r.id, fx.tenant.id) for r in runs]
    assert [f.status for f in finals] == [RunStatus.SUCCEEDED] * 3
    assert sorted(f.output or "" for f in finals) == ["answer 0", "answer 1", "answer 2"]
