"""Which model answers which role, as configured by endpoint URLs.

This is the minimal directory of the walking skeleton: every chat role (`decide`, `extract`, ...)
goes to `GARRISON_CHAT_URL` and `embed` to `GARRISON_EMBED_URL`. A role with no endpoint answers
every call with `ModelUnavailable`, so the loop fails a run with a clear `model_unavailable`
instead of the process refusing to start. Registry-driven routing with fallback replaces this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from serving.client import OpenAICompatibleClient
from serving.errors import ModelUnavailable
from serving.settings import ServingSettings
from serving.types import ChatResult, EmbeddingResult, Message

EMBED_ROLE = "embed"


class UnconfiguredModel:
    """Stands in for a role nobody configured; every call says so plainly."""

    def __init__(self, role: str, env_var: str) -> None:
        self.role = role
        self._hint = f"no model endpoint is configured for role {role!r}; set {env_var}"

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        json_schema: Mapping[str, Any] | None = None,
        schema_name: str = "action",
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> ChatResult:
        raise ModelUnavailable(self._hint)

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        raise ModelUnavailable(self._hint)

    async def ping(self) -> None:
        raise ModelUnavailable(self._hint)

    async def aclose(self) -> None:
        return None


class ModelDirectory:
    """Resolves a role to a client. Built once at the composition root, closed on shutdown."""

    def __init__(self, settings: ServingSettings) -> None:
        key = settings.model_api_key.get_secret_value() if settings.model_api_key else None
        self.chat_endpoint = settings.chat_url
        self.embed_endpoint = settings.embed_url
        self._chat: OpenAICompatibleClient | UnconfiguredModel = (
            OpenAICompatibleClient(
                settings.chat_url,
                model=settings.chat_model,
                api_key=key,
                timeout_s=settings.model_timeout_s,
            )
            if settings.chat_url
            else UnconfiguredModel("decide", "GARRISON_CHAT_URL")
        )
        self._embed: OpenAICompatibleClient | UnconfiguredModel = (
            OpenAICompatibleClient(
                settings.embed_url,
                model=settings.embed_model,
                api_key=key,
                timeout_s=settings.model_timeout_s,
                embed_batch_size=settings.embed_batch_size,
            )
            if settings.embed_url
            else UnconfiguredModel(EMBED_ROLE, "GARRISON_EMBED_URL")
        )

    def chat_model(self, role: str) -> OpenAICompatibleClient | UnconfiguredModel:
        if role == EMBED_ROLE:
            raise ModelUnavailable("the 'embed' role cannot answer chat requests")
        return self._chat

    def embedder(self) -> OpenAICompatibleClient | UnconfiguredModel:
        return self._embed

    async def aclose(self) -> None:
        await self._chat.aclose()
        await self._embed.aclose()
