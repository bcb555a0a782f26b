"""GARRISON_ENGINES=off: no bundled models are used and nothing would be started."""

from __future__ import annotations

import pytest

from serving.registry_source import active_registry
from serving.settings import ServingSettings


def test_engines_off_leaves_no_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARRISON_ENGINES", "off")
    source = active_registry(ServingSettings())
    assert source.origin == "none"
    assert source.registry.deployments == ()


def test_engines_auto_falls_back_to_the_bundled_cpu_models() -> None:
    source = active_registry(ServingSettings(engines="auto"))
    assert source.origin == "bundled"
    assert {d.name for d in source.registry.deployments} == {"gemma3-270m", "minilm"}


def test_configured_urls_win_over_the_bundled_models() -> None:
    source = active_registry(ServingSettings(chat_url="http://127.0.0.1:9/v1"))
    assert source.origin == "environment"


def test_unknown_engines_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARRISON_ENGINES", "sometimes")
    with pytest.raises(ValueError, match="engines"):
        ServingSettings()
