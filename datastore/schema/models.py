"""Model deployments: the registry as last synced, so operators and the API can list it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from datastore.schema.base import Base


class ModelDeploymentRow(Base):
    __tablename__ = "model_deployments"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    spec: Mapped[dict[str, Any]]
    """The whole deployment as validated by `serving.registry` (JSON), compared on sync."""
    roles: Mapped[list[str]] = mapped_column(ARRAY(Text))
    placement_kind: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
