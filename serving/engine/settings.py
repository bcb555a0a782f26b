"""How Garrison runs its own engines: where their files live, which python runs them, how long
to wait, how often to restart. Validated once at the edge (`EngineSettings()` reads GARRISON_*
when constructed, never at import) and passed in.

What a model can do belongs to the registry (`serving.registry`), not here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    # The same default as the datastore's GARRISON_DATA_DIR; serving may not import datastore.
    return Path.home() / ".local" / "share" / "garrison"


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    """Garrison's files; engines use `engine/venv`, `engines/` (pid, logs) and `models/`."""
    engine_python: Path | None = None
    """An existing interpreter with vLLM (e.g. the GPU image's); unset = our own virtualenv."""
    engine_kvcache_gb: int = Field(default=1, ge=1, le=1024)
    """VLLM_CPU_KVCACHE_SPACE for CPU engines, in GiB per engine."""
    engine_ready_timeout_s: float = Field(default=600.0, gt=0)
    """How long `models serve` waits for an engine's first answer (CPU loads take minutes)."""
    engine_stop_grace_s: float = Field(default=20.0, gt=0)
    """Between SIGTERM and SIGKILL when stopping an engine."""
    engine_max_restarts: int = Field(default=5, ge=0, le=1000)
    """How often the supervisor restarts a crashed engine before giving up on it."""

    @field_validator("engine_python", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `export GARRISON_ENGINE_PYTHON=` means "not configured", as for the endpoint URLs.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("engine_python")
    @classmethod
    def _existing_interpreter(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not an existing python interpreter")
        return value

    @property
    def engines_dir(self) -> Path:
        """Pid files and logs of running engines, one pair per deployment."""
        return self.data_dir / "engines"

    @property
    def models_dir(self) -> Path:
        """Model folders Garrison produced itself (imported GGUFs)."""
        return self.data_dir / "models"

    @property
    def venv_dir(self) -> Path:
        return self.data_dir / "engine" / "venv"
