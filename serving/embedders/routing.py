"""Choosing the embedder, and a router whose `embed` role is answered in process.

`Router.embedder()` is how the run loop, search and ingestion reach the `embed` role; a router
built here answers it with the `LocalEmbedder` instead of an engine over HTTP, and routes every
other role as any router does. Which one the appliance gets is `choose_local`'s decision, from
`GARRISON_EMBEDDER` and where the registry came from (`serving.embedders.settings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from serving.embedders.local import LocalEmbedder
from serving.embedders.settings import EmbedderSettings
from serving.engine.bundled import minilm_dir
from serving.engine.environment import locate
from serving.engine.settings import EngineSettings
from serving.registry_source import RegistrySource
from serving.router import RoutedEmbedder, Router
from serving.settings import ServingSettings
from serving.types import EmbeddingResult


def embeds_in_process(settings: EmbedderSettings, source: RegistrySource) -> bool:
    """Whether the `embed` role is answered in this process rather than by an engine."""
    if settings.embedder == "engine":
        return False
    return settings.embedder == "onnx" or source.origin == "bundled"


def choose_local(
    settings: EmbedderSettings, source: RegistrySource, engine: EngineSettings
) -> LocalEmbedder | None:
    """The in-process embedder the settings ask for, or None for the registry's engines."""
    if not embeds_in_process(settings, source):
        return None
    model: Path = settings.embedder_model or minilm_dir(locate(engine))
    return LocalEmbedder(model, engine.models_dir, settings)


class InProcessEmbedRouter(Router):
    def __init__(
        self, source: RegistrySource, settings: ServingSettings, local: LocalEmbedder
    ) -> None:
        super().__init__(source.registry, settings, hints=source)
        self.local = local

    def embedder(self) -> RoutedEmbedder:
        return _InProcess(self, self.local)


class _InProcess(RoutedEmbedder):
    def __init__(self, router: Router, local: LocalEmbedder) -> None:
        super().__init__(router)
        self._local = local

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        return await self._local.embed(texts)
