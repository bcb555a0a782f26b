"""Settings of the CLI itself (GARRISON_CLI_*), beside the appliance's own (`agent.runtime`).

Built with the others in the CLI's root context (`ops.runtime.CliState`), never at import; an
invalid value is refused there as `invalid_configuration`, like any other setting.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class CliSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_CLI_", extra="ignore")

    require_key: bool = False
    """Refuse every tenant-scoped command run without an API key (`--key` or
    GARRISON_API_KEY) with `key_required`, instead of acting as the local administrator. Host
    commands (`ops.command_roles.HOST`: up, serve, worker, db, engine, models, tenants, audit,
    reindex) are not affected: they run as the host's administrator, without a key.

    An operator guard, not a security boundary: it keeps people who share a shell on the host
    acting through their own keys' roles and access tags, but the CLI itself holds the database
    credentials, and anyone who can read them (or run the host commands) can reach every
    tenant's data without a key."""
