"""The in-process embedder as the appliance holds it: prepared on first use, then kept.

Opening Services must stay cheap (every CLI command does it), so nothing is converted or loaded
until the first text is embedded: then the source folder is converted to ONNX once (cached under
`<data dir>/models/`, ~5 s the first time, a checksum check afterwards) and the session loaded
(~0.3 s). A model that cannot be prepared fails the call with `model_unavailable`, as an
engine that is down does, so a run fails with a code and the API answers 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from serving.embedders.convert import ConversionFailed, Precision, convert
from serving.embedders.graph import UnsupportedModel
from serving.embedders.onnx import OnnxEmbedder
from serving.embedders.settings import EmbedderSettings
from serving.errors import ModelUnavailable
from serving.types import EmbeddingResult

REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


class LocalEmbedder:
    def __init__(self, source: Path, cache_root: Path, settings: EmbedderSettings) -> None:
        self.source = source
        precision: Precision = settings.embedder_precision
        stem = source.parent.name if source.name == "model" else source.name
        self.name = f"{stem}-onnx-{precision.value}"
        """What results and steps record as the deployment that embedded."""
        self.folder = cache_root / self.name
        self._exact_folder = cache_root / f"{stem}-onnx-{Precision.FLOAT32.value}"
        self._settings = settings
        self._model: OnnxEmbedder | None = None
        self._lock = asyncio.Lock()

    def check(self) -> str | None:
        """None when the model can be prepared; otherwise why not. Cheap: no conversion."""
        missing = [name for name in REQUIRED if not (self.source / name).is_file()]
        if missing:
            return (
                f"the in-process embedder's model folder {self.source} lacks {', '.join(missing)}"
                " (install the engine with `garrison engine install`, or set"
                " GARRISON_EMBEDDER_MODEL, or GARRISON_EMBEDDER=engine)"
            )
        return None

    def describe(self) -> str:
        return (
            f"in process (ONNX Runtime, {self._settings.embedder_precision.value}, {self.source})"
        )

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        model = self._model or await self._prepare()
        result = await model.embed(texts)
        return replace(result, deployment=self.name)

    async def _prepare(self) -> OnnxEmbedder:
        async with self._lock:
            if self._model is None:
                self._model = await asyncio.to_thread(self._load)
            return self._model

    def _load(self) -> OnnxEmbedder:
        problem = self.check()
        if problem is not None:
            raise ModelUnavailable(problem)
        s = self._settings
        exact = None
        try:
            report = convert(self.source, self.folder, s.embedder_precision)
            if s.embedder_precision is not Precision.FLOAT32:
                # Short texts go through float32 (serving.embedders.onnx.EXACT_BELOW_TOKENS).
                exact = convert(self.source, self._exact_folder, Precision.FLOAT32).path
        except (ConversionFailed, UnsupportedModel) as exc:
            raise ModelUnavailable(f"the in-process embedder cannot be prepared: {exc}") from exc
        return OnnxEmbedder(
            report.path,
            name=self.name,
            batch_size=s.embedder_batch,
            threads=s.embedder_threads,
            exact_dir=exact,
        )
