"""Configuration of governed actions, read once from GARRISON_* at the composition root."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GovernanceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_", extra="ignore")

    approval_ttl_s: float = Field(default=86_400.0, ge=1, le=30 * 86_400)
    """How long a pending approval waits for a person before its run fails
    (`approval_expired`); a policy's `[approvals] ttl_s` overrides it."""
    approval_sweep_s: float = Field(default=5.0, gt=0, le=3600)
    """How often a worker looks for expired approvals (one indexed query)."""
    policy_max_denials: int = Field(default=3, ge=1, le=100)
    """Refused actions (a policy's deny or an approver's) a run may take; the next refusal ends
    it `failed` with `policy_denied`. Below it, the model is told each refusal and goes on."""
    sql_timeout_s: float = Field(default=5.0, gt=0, le=300)
    """`sql_query`'s deadline: connecting, running and fetching; the query is cancelled then."""
    sql_max_rows: int = Field(default=200, ge=1, le=10_000)
    """Rows one `sql_query` returns at most (the model may ask for fewer)."""
    sql_max_bytes: int = Field(default=32_768, ge=1_024, le=16 * 1024 * 1024)
    """Bytes of rows (as JSON text) one `sql_query` returns at most; the cut is reported."""
