"""ServingSettings: read from GARRISON_* at construction, validated there."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.client import chat_client
from serving.settings import ServingSettings

ENV_NAMES = [
    "GARRISON_CHAT_URL",
    "GARRISON_CHAT_MODEL",
    "GARRISON_EMBED_URL",
    "GARRISON_EMBED_MODEL",
    "GARRISON_MODEL_API_KEY",
    "GARRISON_MODEL_TIMEOUT_S",
    "GARRISON_EMBED_BATCH_SIZE",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_without_environment() -> None:
    settings = ServingSettings()

    assert settings.chat_url is None
    assert settings.embed_url is None
    assert (settings.chat_model, settings.embed_model) == ("garrison-decide", "garrison-embed")
    assert settings.model_api_key is None
    assert (settings.model_timeout_s, settings.embed_batch_size) == (60.0, 64)


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARRISON_CHAT_URL", "http://127.0.0.1:8001/v1/")
    monkeypatch.setenv("GARRISON_EMBED_URL", "  ")
    monkeypatch.setenv("GARRISON_CHAT_MODEL", "gemma-270m")
    monkeypatch.setenv("GARRISON_MODEL_API_KEY", "sk-secret-value")
    monkeypatch.setenv("GARRISON_MODEL_TIMEOUT_S", "2.5")
    monkeypatch.setenv("GARRISON_EMBED_BATCH_SIZE", "128")
    monkeypatch.setenv("GARRISON_SOMETHING_ELSE", "belongs to another package")

    settings = ServingSettings()

    assert settings.chat_url == "http://127.0.0.1:8001/v1"
    assert settings.embed_url is None
    assert settings.chat_model == "gemma-270m"
    assert settings.model_timeout_s == 2.5
    assert settings.embed_batch_size == 128
    assert settings.model_api_key is not None
    assert settings.model_api_key.get_secret_value() == "sk-secret-value"
    assert "sk-secret-value" not in repr(settings)


@pytest.mark.parametrize("value", ["0", "-1", "abc"])
def test_bad_timeout_is_rejected(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GARRISON_MODEL_TIMEOUT_S", value)

    with pytest.raises(ValidationError, match="model_timeout_s"):
        ServingSettings()


@pytest.mark.parametrize("value", ["0", "2049"])
def test_bad_batch_size_is_rejected(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GARRISON_EMBED_BATCH_SIZE", value)

    with pytest.raises(ValidationError, match="embed_batch_size"):
        ServingSettings()


def test_url_without_scheme_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARRISON_CHAT_URL", "127.0.0.1:8001/v1")

    with pytest.raises(ValidationError, match="http:// or https://"):
        ServingSettings()


async def test_client_from_settings_uses_key_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARRISON_CHAT_URL", "http://127.0.0.1:8001/v1")
    monkeypatch.setenv("GARRISON_MODEL_API_KEY", "sk-secret-value")

    async with chat_client(ServingSettings()) as client:
        assert client.model == "garrison-decide"
        assert client._http.headers["Authorization"] == "Bearer sk-secret-value"
        assert client._chat_url == "http://127.0.0.1:8001/v1/chat/completions"
