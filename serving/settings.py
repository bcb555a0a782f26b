"""Where the model endpoints are and how long to wait for them, validated once at the edge.

Built by the composition root (``ServingSettings()`` reads ``GARRISON_*`` variables at that
moment, never at import) and passed in explicitly. What a model can do (templates, context
length) does not belong here: that is the models file's business (``serving.models_file``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    """Endpoints and limits for the chat and embedding engines."""

    # Other packages read their own GARRISON_* variables; ignore what is not ours.
    model_config = SettingsConfigDict(env_prefix="GARRISON_", extra="ignore")

    chat_url: str | None = None
    """OpenAI base URL including ``/v1``, e.g. ``http://127.0.0.1:8001/v1``; None = not set up."""
    chat_model: str = "garrison-decide"
    """Served model name of the chat engine."""
    embed_url: str | None = None
    """OpenAI base URL of the embedding engine; None = not set up."""
    embed_model: str = "garrison-embed"
    """Served model name of the embedding engine."""
    model_api_key: SecretStr | None = None
    """Bearer token for the engines, if they require one (SecretStr keeps it out of reprs)."""
    model_timeout_s: float = Field(default=60.0, gt=0)
    """Per-call deadline in seconds."""
    embed_batch_size: int = Field(default=64, ge=1, le=2048)
    """Most texts sent in one embeddings request."""
    models_file: Path | None = None
    """A TOML models file (``GARRISON_MODELS_FILE``); when set it is the whole registry and the
    chat/embed URLs above are ignored."""
    engines: Literal["auto", "off"] = "auto"
    """`off`: never use the bundled CPU models nor start engines (an appliance that only talks
    to engines configured by URL or models file, and test suites that must not find one)."""
    model_retries: int = Field(default=2, ge=0, le=10)
    """Retries of one deployment when it is unavailable (refused, 502/503/504) before falling
    back to the next one in the role's chain; timeouts fall back at once."""
    route_deadline_s: float | None = Field(default=None, gt=0)
    """Overall deadline of one routed call, retries and fallbacks included; None = twice
    ``model_timeout_s``."""
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    """Consecutive unavailable/timed-out attempts that open a deployment's circuit."""
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    """How long an open circuit skips its deployment before one probe call is let through."""

    @field_validator("chat_url", "embed_url")
    @classmethod
    def _http_base_url(cls, value: str | None) -> str | None:
        # An empty variable means "not configured" (shell `export GARRISON_CHAT_URL=`), and a
        # URL without a scheme would only fail later, at the first model call, far from the cause.
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:8001/v1")
        return value

    @field_validator("models_file", mode="before")
    @classmethod
    def _optional_path(cls, value: object) -> object:
        # As for the URLs: `export GARRISON_MODELS_FILE=` means "no models file".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def deadline_s(self) -> float:
        """The routed-call deadline in effect."""
        return self.route_deadline_s or 2 * self.model_timeout_s
