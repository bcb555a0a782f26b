"""Where the database is. Read once at the composition root (CLI or app factory), not at import."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "garrison"


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_", extra="ignore")

    database_url: str | None = None
    """External Postgres (pgvector >= 0.8). Unset: the embedded server in `data_dir` is used."""
    data_dir: Path = Field(default_factory=default_data_dir)
    """Garrison's own files: the embedded database, engine logs, model caches."""
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_connect_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            raise ValueError("GARRISON_DATABASE_URL must be a postgresql:// URL")
        return value

    @property
    def embedded(self) -> bool:
        return self.database_url is None
