"""The run ledger: runs (also the work queue), their steps, their side effects and events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from datastore.schema.base import Base, CreatedAt, UuidPk


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_tenant_created", "tenant_id", "created_at"),
        # The queue: workers scan only claimable rows, oldest first.
        Index(
            "ix_runs_claimable",
            "created_at",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
        Index(
            "uq_runs_tenant_idempotency_key",
            "tenant_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: Mapped[UuidPk]
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id"))
    agent_name: Mapped[str] = mapped_column(String(64))
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id"))
    input: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(24))
    output: Mapped[str | None] = mapped_column(Text)
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_detail: Mapped[str | None] = mapped_column(Text)
    step_count: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    stalled_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    """Claims of the run's next step, the one in hand included (after a commit, its worker's
    claim counts 1); reaching `max_run_attempts` parks the run."""
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[CreatedAt]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    """sha256 of what was submitted with the idempotency key: a reuse with other content is 409."""
    cancel_requested_at: Mapped[datetime | None]
    parent_run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id"))
    forked_from_step: Mapped[int | None] = mapped_column(Integer)
    deployment: Mapped[str | None] = mapped_column(String(63))
    """A deployment name the run's decisions are pinned to (a fork onto another model)."""
    access_tags: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    """The submitting key's access tags, as they were at submission (NULL = the whole tenant):
    every search of the run is narrowed to documents carrying one of them (0011)."""


class StepRow(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("run_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(24))
    context: Mapped[dict[str, Any]]
    decision: Mapped[dict[str, Any]]
    tool: Mapped[str | None] = mapped_column(String(64))
    arguments: Mapped[dict[str, Any] | None]
    result: Mapped[dict[str, Any] | None]
    error_code: Mapped[str | None] = mapped_column(String(64))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    model_ms: Mapped[float] = mapped_column(Double)
    tool_ms: Mapped[float] = mapped_column(Double)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]


class OutboxRow(Base):
    """A side effect a committed step asked for, waiting for (or done with) delivery."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("idempotency_key"),
        Index(
            "ix_outbox_due",
            "next_attempt_at",
            postgresql_where=text("status IN ('pending', 'delivering')"),
        ),
        Index("ix_outbox_run_id", "run_id", "step_number"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id"))
    step_number: Mapped[int] = mapped_column(Integer)
    call_index: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    """`email` or `http`."""
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    """`pending`, `delivering` (claimed by a dispatcher), `delivered` or `failed` (gave up)."""
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    locked_by: Mapped[str | None] = mapped_column(String(128))
    locked_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    response: Mapped[dict[str, Any] | None]
    created_at: Mapped[CreatedAt]
    delivered_at: Mapped[datetime | None]


class RunEventRow(Base):
    """A run's state change or committed step; written only by the `runs_events` trigger."""

    __tablename__ = "run_events"
    __table_args__ = (Index("ix_run_events_run_id", "run_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(16))
    """`state` or `step`."""
    status: Mapped[str] = mapped_column(String(24))
    step_number: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[CreatedAt]
