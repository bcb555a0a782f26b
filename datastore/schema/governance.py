"""Governed actions: versioned policies and the approvals they ask for."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from datastore.schema.base import Base, CreatedAt


class PolicyRow(Base):
    """One applied version of a tenant's (or an agent's) policy file; never updated."""

    __tablename__ = "policies"
    __table_args__ = (
        Index(
            "uq_policies_scope_version",
            "tenant_id",
            text("coalesce(agent_name, '')"),
            "version",
            unique=True,
        ),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    agent_name: Mapped[str | None] = mapped_column(String(64))
    """NULL: the tenant-wide policy; else the named agent's, applied on top of it."""
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    document: Mapped[dict[str, Any]]
    sha256: Mapped[str] = mapped_column(String(64))
    applied_by: Mapped[str] = mapped_column(String(200))
    applied_at: Mapped[CreatedAt]


class ApprovalRow(Base):
    """An action a policy sent to a person; written by the step commit that parks the run."""

    __tablename__ = "approvals"
    __table_args__ = (
        UniqueConstraint("run_id", "step_number"),
        Index("ix_approvals_tenant_created", "tenant_id", "created_at"),
        Index(
            "ix_approvals_pending_expiry", "expires_at", postgresql_where=text("status = 'pending'")
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id"))
    step_number: Mapped[int] = mapped_column(Integer)
    tool: Mapped[str] = mapped_column(String(64))
    arguments: Mapped[dict[str, Any]]
    rule: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    policy: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    provenance: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    """`pending`, `approved`, `denied`, `expired` or `cancelled`."""
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    final_arguments: Mapped[dict[str, Any] | None]
