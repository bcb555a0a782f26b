"""Tenants, their API keys and their agent definitions."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ARRAY, CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from datastore.schema.base import Base, CreatedAt, UuidPk


class TenantRow(Base):
    __tablename__ = "tenants"

    id: Mapped[UuidPk]
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[CreatedAt]


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("access_tags IS NULL OR cardinality(access_tags) > 0", name="access_tags"),
    )

    id: Mapped[UuidPk]
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    # Only a SHA-256 of the key is stored: keys are 256-bit random secrets, so a slow password
    # hash would add latency to every request and no security.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    roles: Mapped[list[str]] = mapped_column(ARRAY(Text))
    access_tags: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    """The key sees only documents carrying one of these; NULL = its whole tenant (0011)."""
    created_at: Mapped[CreatedAt]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class AgentRow(Base):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[UuidPk]
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    instructions: Mapped[str] = mapped_column(Text)
    allowed_tools: Mapped[list[str]] = mapped_column(ARRAY(Text))
    model_role: Mapped[str] = mapped_column(String(32))
    max_steps: Mapped[int] = mapped_column(Integer)
    retrieval_k: Mapped[int] = mapped_column(Integer)
    parallel_calls: Mapped[int] = mapped_column(Integer, server_default="1")
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[CreatedAt]
