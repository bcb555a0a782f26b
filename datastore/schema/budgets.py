"""Budgets: configured limits, per-day counters per scope, and the reservations in flight.

A scope is stored as text, `tenant:<uuid>`, `key:<uuid>` or `agent:<uuid>`, the same key in all
three tables, so a reservation touches its counters by primary key.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, Date, Double, ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from datastore.schema.base import Base


class BudgetRow(Base):
    """A budget rule: limits on one scope over one period (`run` or `day`)."""

    __tablename__ = "budgets"
    __table_args__ = (
        CheckConstraint("period IN ('run', 'day')", name="period"),
        CheckConstraint("period = 'run' OR max_wall_s IS NULL", name="wall_per_run"),
        Index("ix_budgets_tenant_id", "tenant_id"),
    )

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(8), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    max_tokens: Mapped[int | None] = mapped_column(BigInteger)
    max_steps: Mapped[int | None] = mapped_column(BigInteger)
    max_tool_calls: Mapped[int | None] = mapped_column(BigInteger)
    max_wall_s: Mapped[float | None] = mapped_column(Double)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class BudgetUsageRow(Base):
    """One scope's counters for one UTC day. The limits are copied in by each reservation, so
    its guard compares against them without a join."""

    __tablename__ = "budget_usage"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    tokens_used: Mapped[int] = mapped_column(BigInteger, server_default="0")
    tokens_reserved: Mapped[int] = mapped_column(BigInteger, server_default="0")
    steps_used: Mapped[int] = mapped_column(BigInteger, server_default="0")
    tool_calls_used: Mapped[int] = mapped_column(BigInteger, server_default="0")
    token_limit: Mapped[int | None] = mapped_column(BigInteger)
    step_limit: Mapped[int | None] = mapped_column(BigInteger)
    tool_call_limit: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class BudgetReservationRow(Base):
    """Tokens one model call holds on one scope until it is settled or expires."""

    __tablename__ = "budget_reservations"
    __table_args__ = (Index("ix_budget_reservations_scope", "scope", "expires_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    tokens: Mapped[int] = mapped_column(BigInteger)
    run_id: Mapped[uuid.UUID]
    expires_at: Mapped[datetime]
