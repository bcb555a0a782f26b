"""Where the model endpoints are and how long to wait for them, validated once at the edge.

Built by the composition root (``ServingSettings()`` reads ``GARRISON_*`` variables at that
moment, never at import) and passed in explicitly. What a model can do (templates, context
length) does not belong here.
"""

from __future__ import annotations

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
