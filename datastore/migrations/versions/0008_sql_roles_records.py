"""sql_query: per-tenant LOGIN roles, row-level security, allow-listed views; state records.

- `sql_roles`: each tenant's database role and its password (no grant to anyone else).
- `org_data` (base tables of the organisation's records, here the demo's customers and orders),
  FORCE ROW LEVEL SECURITY keyed on `current_user`; `tenant_data`, the allow-listed schema: views
  over them owned by `garrison_sql_views`, and one demo function.
- `garrison_provision_sql_role(tenant)`, run by a trigger for every new tenant and here for the
  existing ones (see `datastore.tenant_roles` for what a role may and may not do).
- `state_records`: typed records with owner, version and valid-until (read_record/write_record).

Roles are cluster-wide and outlive a dropped database; the downgrade drops the tenants' roles.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

from alembic import op

from datastore.tenant_roles import (
    DATA_SCHEMA,
    LOCKDOWN,
    PROVISION_FUNCTION,
    ROLE_TENANT_FUNCTION,
    SQL_SCHEMA,
    TRIGGER_FUNCTION,
    VIEWS_OWNER,
)

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

TABLES = f"""
CREATE TABLE sql_roles (
    tenant_id uuid PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    role_name varchar(63) NOT NULL UNIQUE,
    password text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE state_records (
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key varchar(200) NOT NULL,
    type varchar(64) NOT NULL,
    owner varchar(200) NOT NULL,
    version integer NOT NULL CHECK (version >= 1),
    valid_until timestamptz,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE SCHEMA {DATA_SCHEMA};
CREATE TABLE {DATA_SCHEMA}.customers (
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id integer NOT NULL,
    name text NOT NULL,
    country char(2) NOT NULL,
    segment text NOT NULL,
    contact_email text,
    since date NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE {DATA_SCHEMA}.orders (
    tenant_id uuid NOT NULL,
    id integer NOT NULL,
    customer_id integer NOT NULL,
    product text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    amount numeric(12, 2) NOT NULL,
    currency char(3) NOT NULL DEFAULT 'EUR',
    status text NOT NULL,
    ordered_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id)
        REFERENCES {DATA_SCHEMA}.customers (tenant_id, id) ON DELETE CASCADE
);
"""

RLS = "\n".join(
    f"""
ALTER TABLE {DATA_SCHEMA}.{table} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {DATA_SCHEMA}.{table} FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON {DATA_SCHEMA}.{table} FOR SELECT
    USING (tenant_id = garrison_role_tenant(current_user));
-- FORCE applies the policies to the table's owner too; the application's role (when it is not
-- a superuser, which bypasses them anyway) keeps full access through this one.
CREATE POLICY owner_rows ON {DATA_SCHEMA}.{table} TO CURRENT_USER USING (true) WITH CHECK (true);
"""
    for table in ("customers", "orders")
)

# Built from module constants only, never from input (hence the noqa on S608).
VIEWS = f"""
CREATE SCHEMA {SQL_SCHEMA};
-- contact_email stays out of the view: the organisation decides what agents may read.
CREATE VIEW {SQL_SCHEMA}.customers AS
    SELECT id, name, country, segment, since FROM {DATA_SCHEMA}.customers;
CREATE VIEW {SQL_SCHEMA}.orders AS
    SELECT id, customer_id, product, quantity, amount, currency, status, ordered_at
    FROM {DATA_SCHEMA}.orders;
CREATE FUNCTION {SQL_SCHEMA}.fiscal_quarter(day date) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT 'FY' || extract(year FROM day) || '-Q' || extract(quarter FROM day) $$;
"""  # noqa: S608

VIEWS_OWNER_ROLE = f"""
DO $do$
BEGIN
    IF (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
        BEGIN
            CREATE ROLE {VIEWS_OWNER} NOLOGIN NOINHERIT;
        EXCEPTION WHEN duplicate_object THEN
            NULL;  -- another database of this cluster created it: roles are cluster-wide
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{VIEWS_OWNER}') THEN
        -- The views read their base tables with the owner's privileges but under the base
        -- tables' row-level security, because this owner is not a superuser, has no BYPASSRLS
        -- and owns no base table.
        GRANT USAGE ON SCHEMA {DATA_SCHEMA} TO {VIEWS_OWNER};
        GRANT SELECT ON ALL TABLES IN SCHEMA {DATA_SCHEMA} TO {VIEWS_OWNER};
        GRANT USAGE, CREATE ON SCHEMA {SQL_SCHEMA} TO {VIEWS_OWNER};
        ALTER VIEW {SQL_SCHEMA}.customers OWNER TO {VIEWS_OWNER};
        ALTER VIEW {SQL_SCHEMA}.orders OWNER TO {VIEWS_OWNER};
    END IF;
END
$do$
"""  # noqa: S608


def upgrade() -> None:
    op.execute(TABLES)
    op.execute(ROLE_TENANT_FUNCTION)
    op.execute(RLS)
    op.execute(VIEWS)
    op.execute(VIEWS_OWNER_ROLE)
    op.execute(PROVISION_FUNCTION)
    op.execute("REVOKE EXECUTE ON FUNCTION garrison_provision_sql_role(uuid) FROM PUBLIC")
    op.execute(TRIGGER_FUNCTION)
    op.execute("REVOKE EXECUTE ON FUNCTION garrison_tenant_sql_role() FROM PUBLIC")
    op.execute(
        "CREATE TRIGGER tenants_sql_role AFTER INSERT ON tenants "
        "FOR EACH ROW EXECUTE FUNCTION garrison_tenant_sql_role()"
    )
    op.execute(LOCKDOWN)
    op.execute("SELECT garrison_provision_sql_role(id) FROM tenants")


DROP_ROLES = """
DO $do$
DECLARE r text;
BEGIN
    FOR r IN SELECT role_name FROM sql_roles LOOP
        EXECUTE format('DROP OWNED BY %I', r);  -- its grants and default privileges here
        BEGIN
            EXECUTE format('DROP ROLE %I', r);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'garrison: role % still has privileges elsewhere; kept', r;
        END;
    END LOOP;
END
$do$
"""


def downgrade() -> None:
    op.execute("DROP TRIGGER tenants_sql_role ON tenants")
    op.execute("DROP FUNCTION garrison_tenant_sql_role()")
    op.execute("DROP FUNCTION garrison_provision_sql_role(uuid)")
    op.execute(DROP_ROLES)
    op.execute(f"DROP SCHEMA {SQL_SCHEMA} CASCADE")
    op.execute(f"DROP SCHEMA {DATA_SCHEMA} CASCADE")
    op.execute("DROP FUNCTION garrison_role_tenant(name)")
    op.execute("DROP TABLE state_records")
    op.execute("DROP TABLE sql_roles")
    op.execute(
        """
        DO $do$
        DECLARE f regprocedure;
        BEGIN
            IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                FOR f IN
                    SELECT p.oid::regprocedure FROM pg_proc p
                    WHERE p.pronamespace = 'pg_catalog'::regnamespace
                      AND (p.proname LIKE 'lo\\_%' OR p.proname IN ('loread', 'lowrite',
                                                                   'pg_logical_emit_message'))
                      -- these two never were PUBLIC's (superuser only): leave them so
                      AND p.proname NOT IN ('lo_import', 'lo_export')
                LOOP
                    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f);
                END LOOP;
            END IF;
            EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', current_database());
        END
        $do$
        """
    )
