"""Tunables of the run event stream. Built once at the composition root, with the others."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EventSettings(BaseSettings):
    # The GARRISON_ prefix with `events_` fields, rather than a GARRISON_EVENTS_ prefix, so a bad
    # value is reported under the variable's real name by the CLI's configuration errors.
    model_config = SettingsConfigDict(env_prefix="GARRISON_", extra="ignore")

    events_heartbeat_s: float = Field(default=15.0, gt=0, le=300)
    """A stream with nothing to say for this long sends a keep-alive (an SSE comment), so
    proxies and load balancers do not close it as idle."""
    events_poll_s: float = Field(default=1.0, gt=0, le=60)
    """While the LISTEN connection is down, streams read the event table this often instead."""
