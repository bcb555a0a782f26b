"""Per-tenant Postgres LOGIN roles for `sql_query`, and the row-level security they are held by.

Every tenant gets a role `garrison_t_<tenant id hex>` the moment its row is inserted (a trigger on
`tenants` calls `garrison_provision_sql_role`, so no code path can forget it; migration 0008 runs
the same function for tenants that already existed). The role:

- LOGIN, NOINHERIT, member of nothing, owns nothing, no CREATE anywhere (TEMP on the database is
  revoked from PUBLIC), a connection limit;
- SELECT on the views of `tenant_data` only, which are owned by `garrison_sql_views` (NOLOGIN,
  neither superuser nor BYPASSRLS, owns no base table), so a view reads its base tables under
  row-level security;
- base tables (`org_data.*`) have FORCE ROW LEVEL SECURITY with a policy keyed on `current_user`
  (`garrison_role_tenant(current_user)` reads the tenant id out of the role name: only a role
  that may create roles can mint such a name);
- role defaults `default_transaction_read_only=on`, `statement_timeout`, `lock_timeout`, ... as a
  backstop; the runner (`datastore.tenant_sql`) also sends them as connection options, which
  override a default the role might have altered for itself.

This is the boundary that holds without the SQL guard: `SET ROLE`/`RESET ROLE` cannot leave a
login role that is a member of nothing, and `set_config` cannot change `current_user`. The
password is random, kept in `sql_roles` (no grant to anyone but the application's role) and used
only to open the tenant's connections; the embedded server trusts its private socket instead.

Creating roles needs a database user with CREATEROLE (the embedded server's is a superuser). Without
it nothing is provisioned and `sql_query` answers `sql_not_configured`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from datastore.errors import translated

SQL_SCHEMA: Final = "tenant_data"
"""The allow-listed schema: views (and functions) the organisation exposes to agents."""
DATA_SCHEMA: Final = "org_data"
"""Base tables of the organisation's records, keyed by tenant, under forced row-level security."""
VIEWS_OWNER: Final = "garrison_sql_views"
ROLE_PREFIX: Final = "garrison_t_"
CONNECTION_LIMIT: Final = 4
ROLE_SETTINGS: Final = {
    "default_transaction_read_only": "on",
    "statement_timeout": "30s",
    "lock_timeout": "2s",
    "idle_in_transaction_session_timeout": "10s",
    "idle_session_timeout": "60s",
    "search_path": SQL_SCHEMA,
    "work_mem": "16MB",
    # A backend whose client went away (a cancelled tool call) stops within a second.
    "client_connection_check_interval": "1s",
}
"""Role defaults: a backstop. The runner sends the ones that matter with every connection."""
SUPERUSER_SETTINGS: Final = {"temp_file_limit": "64MB"}
"""Only a superuser may set these, even as a role default."""

ROLE_TENANT_FUNCTION: Final = r"""
CREATE FUNCTION garrison_role_tenant(role_name name) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT CASE WHEN role_name ~ '^garrison_t_[0-9a-f]{32}$'
                THEN substr(role_name, 12)::uuid END
$$
"""
"""The tenant whose role this is, or NULL: the policies' key. Pure, so the planner evaluates it
once per query and the tenant_id index serves the filter."""


def _settings_sql() -> str:
    lines = [
        f"EXECUTE format('ALTER ROLE %I SET {name} = %L', role_name, '{value}');"
        for name, value in ROLE_SETTINGS.items()
    ]
    lines += [
        "IF me.rolsuper THEN "
        f"EXECUTE format('ALTER ROLE %I SET {name} = %L', role_name, '{value}'); END IF;"
        for name, value in SUPERUSER_SETTINGS.items()
    ]
    return "\n        ".join(lines)


_ATTRIBUTES = (
    "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS "
    f"CONNECTION LIMIT {CONNECTION_LIMIT}"
)

# Built from module constants only, never from input (hence the noqa on S608).
PROVISION_FUNCTION: Final = f"""
CREATE FUNCTION garrison_provision_sql_role(tenant uuid) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, public
AS $fn$
DECLARE
    role_name text := '{ROLE_PREFIX}' || replace(tenant::text, '-', '');
    secret text;
    me record;
BEGIN
    SELECT rolsuper, rolcreaterole INTO me FROM pg_roles WHERE rolname = current_user;
    IF NOT (me.rolsuper OR me.rolcreaterole)
       OR NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{VIEWS_OWNER}') THEN
        RAISE NOTICE 'garrison: % may not create roles, so sql_query is unavailable', current_user;
        RETURN NULL;
    END IF;
    SELECT r.password INTO secret FROM sql_roles r WHERE r.tenant_id = tenant;
    IF secret IS NULL THEN
        -- gen_random_uuid() draws from the server's strong random source.
        secret := encode(sha256(convert_to(
            gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')), 'hex');
    END IF;
    -- Re-running provisioning repairs a role: attributes, password and defaults are set again
    -- (a role may change its own password and defaults; this undoes that).
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
        EXECUTE format('ALTER ROLE %I WITH {_ATTRIBUTES} PASSWORD %L', role_name, secret);
    ELSE
        EXECUTE format('CREATE ROLE %I WITH {_ATTRIBUTES} PASSWORD %L', role_name, secret);
    END IF;
    EXECUTE format('ALTER ROLE %I RESET ALL', role_name);
        {_settings_sql()}
    -- Database privileges are not copied by CREATE DATABASE ... TEMPLATE: set them every time.
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), role_name);
    EXECUTE format('GRANT USAGE ON SCHEMA {SQL_SCHEMA} TO %I', role_name);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA {SQL_SCHEMA} TO %I', role_name);
    -- Views the organisation adds later (created as {VIEWS_OWNER}) are readable at once.
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES FOR ROLE {VIEWS_OWNER} IN SCHEMA {SQL_SCHEMA} '
        'GRANT SELECT ON TABLES TO %I', role_name);
    INSERT INTO sql_roles (tenant_id, role_name, password) VALUES (tenant, role_name, secret)
    ON CONFLICT (tenant_id) DO UPDATE
        SET role_name = EXCLUDED.role_name, password = EXCLUDED.password;
    RETURN role_name;
END
$fn$
"""  # noqa: S608

TRIGGER_FUNCTION: Final = """
CREATE FUNCTION garrison_tenant_sql_role() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public
AS $fn$
BEGIN
    PERFORM garrison_provision_sql_role(NEW.id);
    RETURN NEW;
END
$fn$
"""

LOCKDOWN: Final = r"""
DO $do$
DECLARE f regprocedure;
BEGIN
    -- Large objects are the one kind of row every role may create; with the read-only default
    -- turned off by a session they would be a write. Revoking needs a superuser (the functions
    -- belong to the bootstrap superuser); the application never uses large objects.
    -- pg_logical_emit_message writes to the WAL for any role.
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        FOR f IN
            SELECT p.oid::regprocedure FROM pg_proc p
            WHERE p.pronamespace = 'pg_catalog'::regnamespace
              AND (p.proname LIKE 'lo\_%' OR p.proname IN ('loread', 'lowrite',
                                                           'pg_logical_emit_message'))
        LOOP
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        END LOOP;
    END IF;
    BEGIN
        REVOKE CREATE ON SCHEMA public FROM PUBLIC;  -- the default since PG 15; older databases
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'garrison: could not revoke CREATE on schema public from PUBLIC';
    END;
END
$do$
"""


def role_name(tenant_id: uuid.UUID) -> str:
    return f"{ROLE_PREFIX}{tenant_id.hex}"


@dataclass(frozen=True, slots=True)
class RoleCredentials:
    role: str
    password: str


class TenantRoleRepository:
    """Looks up a tenant's role for the runner, and re-provisions it on demand."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def credentials(self, tenant_id: uuid.UUID) -> RoleCredentials | None:
        """The tenant's role, or None if it was never provisioned (no CREATEROLE)."""
        async with translated(), self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT role_name, password FROM sql_roles WHERE tenant_id = :t"),
                    {"t": tenant_id},
                )
            ).first()
        return None if row is None else RoleCredentials(row.role_name, row.password)

    async def provision(self, tenant_id: uuid.UUID) -> str | None:
        """Create or repair the tenant's role; its name, or None if roles cannot be created."""
        async with translated(), self._engine.begin() as conn:
            name = (
                await conn.execute(text("SELECT garrison_provision_sql_role(:t)"), {"t": tenant_id})
            ).scalar_one()
        return None if name is None else str(name)
