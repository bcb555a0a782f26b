"""Connections: turning a libpq URL into SQLAlchemy engines with Garrison's pool settings."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def sqlalchemy_url(url: str) -> str:
    """Accept plain libpq URLs (what people and the embedded server hand out) for psycopg 3."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def create_async(url: str, *, pool_size: int = 10, connect_timeout_s: float = 5.0) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        # A connection killed by a database restart is detected before use, so the first request
        # after a restart succeeds instead of failing with a stale socket.
        pool_pre_ping=True,
        pool_timeout=connect_timeout_s,
        connect_args={"connect_timeout": max(1, int(connect_timeout_s))},
    )


def create_sync(url: str, *, connect_timeout_s: float = 5.0) -> Engine:
    """A small synchronous engine for migrations and administrative checks."""
    return create_engine(
        sqlalchemy_url(url),
        pool_size=1,
        max_overflow=0,
        connect_args={"connect_timeout": max(1, int(connect_timeout_s))},
    )
