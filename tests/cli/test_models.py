"""`garrison models sync|list|health`, human and --json, and an invalid models file."""

from __future__ import annotations

from pathlib import Path

from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.cli.conftest import Cli, in_services
from tests.modelsfile import external, write_models_file
from tests.serving.conftest import closed_port_url


def models_cli(cli: Cli, path: Path) -> Cli:
    env = {k: v for k, v in cli.env.items() if k not in ("GARRISON_CHAT_URL", "GARRISON_EMBED_URL")}
    return Cli({**env, "GARRISON_MODELS_FILE": str(path)})


def test_sync_then_list_from_the_environment(cli: Cli) -> None:
    assert cli.ok("models", "list").stdout == (
        "no deployments synced yet: run `garrison models sync`\n"
    )
    synced = cli.ok("models", "sync").stdout
    assert synced == "synced from GARRISON_CHAT_URL/GARRISON_EMBED_URL: added chat, embed\n"
    again = cli.json("models", "sync")
    assert again == {
        "source": "GARRISON_CHAT_URL/GARRISON_EMBED_URL",
        "added": [],
        "changed": [],
        "removed": [],
        "unchanged": ["chat", "embed"],
    }
    assert "already in sync with GARRISON_CHAT_URL/GARRISON_EMBED_URL (2 deployment(s))" in (
        cli.ok("models", "sync").stdout
    )

    rows = cli.ok("models", "list").stdout.splitlines()
    assert rows[0].split() == ["NAME", "ROLES", "PLACEMENT", "MODEL", "CONTEXT", "UPDATED"]
    chat_url = cli.env["GARRISON_CHAT_URL"]
    assert rows[1].split()[:6] == [
        "chat", "decide,extract", "external", chat_url, "garrison-decide", "2048"
    ]  # fmt: skip
    listed = cli.json("models", "list")["deployments"]
    assert [d["name"] for d in listed] == ["chat", "embed"]
    embed = listed[1]
    assert embed["roles"] == ["embed"]
    assert embed["model"] == "garrison-embed"
    assert embed["placement"]["kind"] == "external"
    assert embed["capabilities"]["embedding_dim"] == 384
    assert embed["updated_at"]


def test_health_human_and_json(cli: Cli) -> None:
    human = cli.ok("models", "health").stdout.splitlines()
    assert human[0] == "registry: GARRISON_CHAT_URL/GARRISON_EMBED_URL"
    assert human[1].split() == ["NAME", "ROLES", "KIND", "URL", "STATUS", "BREAKER", "IN-FLIGHT"]
    assert human[2].split()[:2] == ["chat", "decide,extract"]
    assert human[2].split()[4:] == ["ok", "closed", "0"]
    assert "role decide: served by chat" in human
    assert "role embed: served by embed" in human

    report = cli.json("models", "health")
    assert report["source"] == "GARRISON_CHAT_URL/GARRISON_EMBED_URL"
    assert [(d["name"], d["ok"], d["breaker"]) for d in report["deployments"]] == [
        ("chat", True, "closed"),
        ("embed", True, "closed"),
    ]
    assert report["roles"]["decide"] == {"ok": True, "chain": ["chat"]}


def test_health_needs_no_database_and_names_what_is_down(
    cli: Cli, tmp_path: Path, scripted_model: ScriptedModelServer
) -> None:
    path = write_models_file(
        tmp_path / "models.toml",
        external("dead", closed_port_url()),
        external("alive", scripted_model.base_url),
        routes={"decide": ["dead", "alive"]},
    )
    env = models_cli(cli, path).env
    env["GARRISON_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"
    report = Cli(env).json("models", "health", "--timeout", "1")
    assert report["source"] == f"models file {path}"
    assert [(d["name"], d["ok"]) for d in report["deployments"]] == [
        ("dead", False),
        ("alive", True),
    ]
    assert report["roles"] == {"decide": {"ok": True, "chain": ["dead", "alive"]}}
    human = Cli(env).ok("models", "health").stdout
    assert "dead: model_unavailable: " in human
    assert "role decide: served by alive" in human


def test_sync_follows_the_models_file(
    cli: Cli, tmp_path: Path, settings: Settings, scripted_model: ScriptedModelServer
) -> None:
    url = scripted_model.base_url
    path = write_models_file(tmp_path / "models.toml", external("a", url), external("b", url))
    files = models_cli(cli, path)
    assert files.ok("models", "sync").stdout == f"synced from models file {path}: added a, b\n"
    write_models_file(path, external("a", url, ("decide", "extract")))
    report = files.json("models", "sync")
    assert (report["changed"], report["removed"]) == (["a"], ["b"])
    assert [d["roles"] for d in files.json("models", "list")["deployments"]] == [
        ["decide", "extract"]
    ]

    async def audited(services: Services) -> list[dict[str, object]]:
        entries = await services.store.audit.list_entries(None, 10)
        return [e.detail for e in entries if e.action == "models.sync"]

    assert in_services(settings, audited) == [
        {"added": [], "changed": ["a"], "removed": ["b"]},
        {"added": ["a", "b"], "changed": [], "removed": []},
    ]


def test_an_invalid_models_file_is_a_usage_error_with_its_line(
    cli: Cli, tmp_path: Path, scripted_model: ScriptedModelServer
) -> None:
    path = tmp_path / "models.toml"
    text = external("a", scripted_model.base_url).replace('["decide"]', '["plan"]')
    path.write_text(text)
    files = models_cli(cli, path)
    for command in (("models", "health"), ("models", "list"), ("models", "sync")):
        result = files.fails(2, "invalid_models_file", *command)
        assert f'{path}:4: deployments[0] (name "a").roles: unknown roles' in result.stderr
