"""Which registry is active: the models file, else the endpoint URLs, else the bundled CPU
registry when the engine package provides one, else nothing (with a hint)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from serving.errors import ModelsFileError
from serving.registry import Deployment, Registry
from serving.registry_source import active_registry
from serving.settings import ServingSettings
from tests.modelsfile import external, write_models_file

CHAT = "http://127.0.0.1:9101/v1"
EMBED = "http://127.0.0.1:9102/v1"


def settings(**values: object) -> ServingSettings:
    base: dict[str, object] = {"chat_url": None, "embed_url": None, "models_file": None}
    return ServingSettings(**{**base, **values})  # type: ignore[arg-type]


@pytest.fixture
def no_bundled(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever the engine package ships, these tests decide whether a bundled registry exists.
    monkeypatch.setitem(sys.modules, "serving.engine.bundled", None)


@pytest.mark.usefixtures("no_bundled")
def test_endpoint_urls_become_two_external_deployments() -> None:
    source = active_registry(settings(chat_url=CHAT, embed_url=EMBED, chat_model="gemma"))
    assert source.origin == "environment"
    chat, embed = source.registry.deployments
    assert (chat.name, chat.roles, chat.served_name) == ("chat", ("decide", "extract"), "gemma")
    assert source.registry.url_of("chat") == CHAT
    assert (embed.name, embed.roles, embed.served_name) == ("embed", ("embed",), "garrison-embed")
    assert embed.capabilities.embedding_dim == 384
    only_chat = active_registry(settings(chat_url=CHAT)).registry
    assert [d.name for d in only_chat.deployments] == ["chat"]


@pytest.mark.usefixtures("no_bundled")
def test_the_models_file_wins_over_the_urls(tmp_path: Path) -> None:
    path = write_models_file(tmp_path / "m.toml", external("remote", CHAT, model="qwen"))
    source = active_registry(settings(models_file=path, chat_url=EMBED))
    assert source.origin == "models_file"
    assert source.description == f"models file {path}"
    assert source.when_down("decide") == (
        f"check the engines of the models file {path} (`garrison models health`)"
    )
    [remote] = source.registry.deployments
    assert remote.served_name == "qwen"  # an external engine is asked for the model it serves
    assert "add a deployment serving 'embed' to the models file" in source.how_to_configure("embed")


@pytest.mark.usefixtures("no_bundled")
def test_an_invalid_models_file_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(external("remote", CHAT, ("embed",), embedding_dim=1024))
    with pytest.raises(ModelsFileError, match=r"m\.toml:\d+: .*384-dimensional"):
        active_registry(settings(models_file=path), embedding_dim=384)


@pytest.mark.usefixtures("no_bundled")
def test_nothing_configured_is_an_empty_registry_with_a_hint() -> None:
    source = active_registry(settings())
    assert source.origin == "none"
    assert source.registry.deployments == ()
    assert "set GARRISON_EMBED_URL" in source.how_to_configure("embed")


def test_the_bundled_registry_is_used_when_the_engine_package_has_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundled = Registry(
        deployments=(Deployment(name="tiny", model="/models/tiny", roles=("decide",)),)
    )
    seen: list[ServingSettings] = []

    def fake_active_registry(given: ServingSettings) -> Registry:
        seen.append(given)
        return bundled

    module = types.ModuleType("serving.engine.bundled")
    module.active_registry = fake_active_registry  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "serving.engine.bundled", module)
    config = settings()
    source = active_registry(config)
    assert (source.origin, source.registry) == ("bundled", bundled)
    assert seen == [config]
    down = source.when_down("decide")
    assert "`garrison models serve`" in down
    assert "GARRISON_CHAT_URL" in down
    assert active_registry(settings(chat_url=CHAT)).origin == "environment"
