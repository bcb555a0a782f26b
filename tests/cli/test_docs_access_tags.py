"""The CLI with a key that has access tags reads, finds, deletes and stores documents as that key
does through the API (tests/api/test_access_tags_api.py): only those carrying one of its tags
exist for it, and the runs it submits retrieve only those."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.domain import RunStatus
from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.api.test_access_tags_api import QUERY, documents, kinds
from tests.cli.conftest import Cli, in_services
from tests.conftest import make_tenant


def plant(settings: Settings) -> dict[str, str]:
    """acme with the API tests' documents (`Visible` tagged hr, `Hidden` tagged eng,
    `Untagged`), stored by the tenant; their ids by title. `Hidden 0` holds the key `ops/ci`."""

    async def store(services: Services) -> dict[str, str]:
        fx = await make_tenant(services, "acme")
        ids = {}
        for doc in documents():
            key = "ops/ci" if doc["title"] == "Hidden 0" else None
            stored, _ = await services.documents.ingest(
                fx.tenant.id,
                title=doc["title"],
                text=doc["text"],
                tags=tuple(doc.get("tags", ())),
                key=key,
            )
            ids[stored.title] = str(stored.id)
        return ids

    return in_services(settings, store)


def as_key(cli: Cli, *args: str) -> Cli:
    """The CLI acting as a new acme key made with `keys create ARGS`."""
    secret = cli.json("keys", "create", "-t", "acme", *args)["secret"]
    return Cli({**cli.env, "GARRISON_API_KEY": secret})


def titles(found: list[dict[str, Any]]) -> set[str]:
    return kinds([d["title"] for d in found])


def test_list_show_delete_and_search_see_only_the_keys_documents(
    cli: Cli, settings: Settings
) -> None:
    ids = plant(settings)
    hr = as_key(cli, "--role", "operator", "--access-tag", "hr")

    listed = hr.json("docs", "list", "-t", "acme", "-n", "100")["documents"]
    assert (titles(listed), len(listed)) == ({"Visible"}, 6)
    assert len(cli.json("docs", "list", "-t", "acme", "-n", "100")["documents"]) == 18

    found = hr.json("search", QUERY, "-t", "acme", "-k", "5")["hits"]
    assert (titles(found), len(found)) == ({"Visible"}, 5)
    everyone = cli.json("search", QUERY, "-t", "acme", "-k", "4")["hits"]
    assert titles(everyone) == {"Hidden", "Untagged"}  # what the key is kept from
    # The key's scope and the caller's own filter must both hold.
    assert hr.json("search", QUERY, "-t", "acme", "--any-tag", "eng")["hits"] == []
    assert titles(hr.json("search", "XK-4471-2", "-t", "acme")["hits"]) == {"Visible"}

    assert hr.json("docs", "show", ids["Visible 0"], "-t", "acme")["document"]["tags"] == ["hr"]
    for hidden in (ids["Hidden 0"], ids["Untagged 0"]):
        hr.fails(1, "not_found", "docs", "show", hidden, "-t", "acme")
        hr.fails(1, "not_found", "docs", "delete", hidden, "-t", "acme", "-y")
        assert cli.json("docs", "show", hidden, "-t", "acme")["document"]["id"] == hidden
    deleted = hr.json("docs", "delete", ids["Visible 0"], "-t", "acme", "-y")["deleted"]
    assert deleted["id"] == ids["Visible 0"]
    cli.fails(1, "not_found", "docs", "show", ids["Visible 0"], "-t", "acme")


def test_docs_add_stores_only_documents_the_key_could_see(
    cli: Cli, settings: Settings, tmp_path: Path
) -> None:
    ids = plant(settings)
    hr = as_key(cli, "--role", "operator", "--access-tag", "hr", "--access-tag", "legal")
    note = tmp_path / "note.md"
    note.write_text("# Pay day\n\nThe 25th of each month.\n")

    for tags in ((), ("--tag", "eng")):
        refused = hr.fails(1, "access_tag_required", "docs", "add", str(note), "-t", "acme", *tags)
        assert "one of this API key's access tags: hr, legal" in refused.stderr
    assert "Pay day" not in cli.ok("docs", "list", "-t", "acme", "-n", "100").stdout

    # A key held by a document it cannot see is not its to replace: that file is skipped.
    takeover = hr(
        "docs", "add", str(note), "-t", "acme", "--tag", "hr", "--key", "ops/ci", "--json"
    )
    assert takeover.exit_code == 1, takeover.output
    [skipped] = json.loads(takeover.stdout)["files"]
    assert (skipped["status"], skipped["code"]) == ("failed", "access_tag_required")
    assert cli.json("docs", "show", ids["Hidden 0"], "-t", "acme")["document"]["title"] == (
        "Hidden 0"
    )

    added = hr.json("docs", "add", str(note), "-t", "acme", "--tag", "legal", "--tag", "eng")
    assert added["added"] == 1
    mine = added["files"][0]["document_id"]
    assert hr.json("docs", "show", mine, "-t", "acme")["document"]["tags"] == ["eng", "legal"]


def test_a_run_submitted_with_a_restricted_key_retrieves_only_its_documents(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer
) -> None:
    plant(settings)
    hr = as_key(cli, "--role", "client", "--access-tag", "hr")
    scripted_model.enqueue({"tool": "search_documents", "arguments": {"query": QUERY, "k": 5}})
    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": "done"}})
    run = hr.json("runs", "submit", QUERY, "-t", "acme", "-a", "assistant")["run"]

    async def drive(services: Services) -> tuple[str, ...] | None:
        assert await services.worker().run_until_idle() == 1
        done = await services.runs.get(run["id"], None)
        assert done.status is RunStatus.SUCCEEDED
        return done.access_tags

    assert in_services(settings, drive) == ("hr",)
    [first, _] = hr.json("runs", "show", run["id"])["steps"]
    passages = [p["title"] for p in first["context"]["passages"]]
    assert passages
    assert kinds(passages) == {"Visible"}
    hits = [h["title"] for h in first["result"]["hits"]]
    assert (kinds(hits), len(hits)) == ({"Visible"}, 5)
