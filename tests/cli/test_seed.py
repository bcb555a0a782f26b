"""The demo seed `garrison up` runs: idempotent, and never overwrites what an operator changed."""

from __future__ import annotations

from pathlib import Path

from agent.runtime import Services, Settings
from ops.seed import DEMO_AGENT, DEMO_TENANT, KEY_FILE, SeedReport, demo_documents, seed_demo
from serving.testing.scripted import ScriptedModelServer
from tests.cli.conftest import in_services


def seed(settings: Settings, data_dir: Path, *, load_documents: bool = True) -> SeedReport:
    async def work(services: Services) -> SeedReport:
        return await seed_demo(services, data_dir, actor="test", load_documents=load_documents)

    return in_services(settings, work)


def test_demo_documents_are_the_northwind_handbook() -> None:
    docs = dict(demo_documents())
    assert len(docs) == 5
    assert "NW-4471" in docs["product-catalogue.md"]
    assert all(text.startswith("# ") for text in docs.values())


def test_seed_is_idempotent(settings: Settings, tmp_path: Path) -> None:
    first = seed(settings, tmp_path)
    assert first.agent_created
    assert first.key_created
    assert sorted(first.documents_added) == [name for name, _ in demo_documents()]
    key_file = tmp_path / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().strip() == first.secret

    second = seed(settings, tmp_path)
    assert not second.agent_created
    assert not second.key_created
    assert second.secret == first.secret
    assert second.documents_added == []
    assert second.documents_present == 5

    async def state(services: Services) -> tuple[int, int, int]:
        tenant = await services.tenancy.require_tenant(DEMO_TENANT)
        agents = await services.tenancy.list_agents(DEMO_TENANT)
        keys = await services.keys.list(DEMO_TENANT)
        docs = await services.documents.list(tenant.id)
        assert [a.name for a in agents] == [DEMO_AGENT]
        return agents[0].version, len(keys), len(docs)

    assert in_services(settings, state) == (1, 1, 5)


def test_seed_keeps_an_edited_agent_and_replaces_a_lost_key(
    settings: Settings, tmp_path: Path
) -> None:
    first = seed(settings, tmp_path, load_documents=False)
    assert first.documents_skipped == "no embedding model is reachable"
    assert first.documents_added == []

    async def edit_agent_and_revoke(services: Services) -> None:
        await services.tenancy.put_agent(
            DEMO_TENANT, DEMO_AGENT, instructions="Answer in French.", actor="operator"
        )
        principal = await services.keys.authenticate(first.secret)
        await services.keys.revoke(principal.key_id, actor="operator")

    in_services(settings, edit_agent_and_revoke)
    second = seed(settings, tmp_path)
    assert second.key_created
    assert second.secret != first.secret
    assert (tmp_path / KEY_FILE).read_text().strip() == second.secret
    assert len(second.documents_added) == 5  # the model is back: the documents go in now

    (tmp_path / KEY_FILE).unlink()
    third = seed(settings, tmp_path)
    assert third.key_created
    assert third.secret not in (first.secret, second.secret)

    async def instructions(services: Services) -> str:
        return (await services.tenancy.list_agents(DEMO_TENANT))[0].instructions

    assert in_services(settings, instructions) == "Answer in French."


def test_seed_survives_a_failing_embedding_model(
    settings: Settings, tmp_path: Path, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.stop()
    report = seed(settings, tmp_path)
    assert report.documents_skipped is not None
    assert "model_unavailable" in report.documents_skipped
    assert report.secret  # the rest of the demo is in place
