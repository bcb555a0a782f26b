"""Models: what the loop asks of a chat model and an embedder, and the registry's record."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from agent.domain import (
    ModelDeploymentRecord,
    ModelSync,
)
from serving.types import ChatResult, EmbeddingResult, Message


class ChatModel(Protocol):
    async def chat(
        self,
        messages: Sequence[Message],
        *,
        json_schema: Mapping[str, Any] | None = None,
        schema_name: str = "action",
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> ChatResult: ...


class Embedder(Protocol):
    async def embed(self, texts: Sequence[str]) -> EmbeddingResult: ...


class ModelDeploymentStore(Protocol):
    async def sync(self, deployments: Sequence[ModelDeploymentRecord], *, actor: str) -> ModelSync:
        """Make the stored set exactly `deployments`, in one transaction, audited if it changed."""
        ...

    async def list_deployments(self) -> list[ModelDeploymentRecord]: ...


class HealthProbe(Protocol):
    async def ping(self) -> None: ...
