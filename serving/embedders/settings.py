"""Which embedder answers the `embed` role, and how the in-process one runs. Read once, at the edge.

`GARRISON_EMBEDDER`:
- `auto` (default): in process when the registry is the bundled CPU one (the same
  all-MiniLM-L6-v2 the bundled engine would serve, ~2x its throughput: README), otherwise the
  configured engine, whose model Garrison does not know how to run itself;
- `engine`: always the registry's `embed` deployments over HTTP;
- `onnx`: always in process, with `GARRISON_EMBEDDER_MODEL` or the bundled MiniLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.embedders.convert import Precision
from serving.embedders.onnx import DEFAULT_BATCH


class EmbedderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_", extra="ignore")

    embedder: Literal["auto", "engine", "onnx"] = "auto"
    embedder_model: Path | None = None
    """A local Hugging Face folder of a BERT sentence encoder (config.json, model.safetensors,
    tokenizer.json); None = the bundled all-MiniLM-L6-v2 of the engine's venv."""
    embedder_precision: Precision = Precision.INT8
    embedder_batch: int = Field(default=DEFAULT_BATCH, ge=1, le=256)
    """Texts per ONNX Runtime call; small batches are fastest on CPU (bench/embedders.py)."""
    embedder_threads: int = Field(default=0, ge=0, le=256)
    """Threads of the in-process embedder; 0 = one per core."""

    @field_validator("embedder_model", mode="before")
    @classmethod
    def _optional_path(cls, value: object) -> object:
        # `export GARRISON_EMBEDDER_MODEL=` means "not set", as for the other path settings.
        if isinstance(value, str) and not value.strip():
            return None
        return value
