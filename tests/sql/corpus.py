"""SQL escapes an agent (or an injected document) might try, each with the guard's expected reason.

The same corpus runs twice: against the guard (each must be rejected for its reason), and with
the guard switched off, straight on the tenant role's connection (the database alone must allow
no write and no foreign row). `{other}` is replaced by the other tenant's role name, `{other_id}`
by its tenant id.
"""

from __future__ import annotations

from typing import NamedTuple


class Escape(NamedTuple):
    name: str
    sql: str
    reason: str


ESCAPES: tuple[Escape, ...] = (
    # Statement stacking and transaction control.
    Escape(
        "stacked_commit",
        "SELECT 1; COMMIT; INSERT INTO org_data.orders VALUES "
        "('{other_id}', 999, 1, 'x', 1, 1, 'EUR', 'new', now())",
        "multiple_statements",
    ),
    Escape(
        "stacked_commit_delete",
        "COMMIT; DELETE FROM org_data.orders",
        "multiple_statements",
    ),
    Escape(
        "begin_read_write",
        "BEGIN READ WRITE; DELETE FROM org_data.customers",
        "multiple_statements",
    ),
    # Settings that decide who you are or what you may do.
    Escape(
        "set_config_tenant",
        "SELECT set_config('app.tenant', '{other_id}', false), * FROM orders",
        "function_not_allowed",
    ),
    Escape(
        "set_config_read_only",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "function_not_allowed",
    ),
    Escape("set_role", "SET ROLE {other}", "not_a_select"),
    Escape("reset_role", "RESET ROLE", "not_a_select"),
    Escape(
        "reset_then_set_role",
        "RESET ROLE; SET ROLE {other}; SELECT * FROM orders",
        "multiple_statements",
    ),
    Escape("session_authorization", "SET SESSION AUTHORIZATION {other}", "not_a_select"),
    Escape("statement_timeout", "SET statement_timeout = 0", "not_a_select"),
    Escape(
        "statement_timeout_then_sleep",
        "SET statement_timeout = 0; SELECT pg_sleep(0.1)",
        "multiple_statements",
    ),
    Escape("read_only_off", "SET default_transaction_read_only = off", "not_a_select"),
    Escape(
        "read_only_off_then_write",
        "SET default_transaction_read_only = off; UPDATE org_data.orders SET amount = 0",
        "multiple_statements",
    ),
    Escape("transaction_read_write", "SET TRANSACTION READ WRITE", "not_a_select"),
    Escape(
        "alter_own_role",
        "ALTER ROLE CURRENT_USER SET default_transaction_read_only = off",
        "not_a_select",
    ),
    # Writes hidden inside a SELECT.
    Escape(
        "writable_cte_delete",
        "WITH gone AS (DELETE FROM org_data.orders RETURNING *) SELECT count(*) FROM gone",
        "writable_cte",
    ),
    Escape(
        "writable_cte_insert",
        "WITH x AS (INSERT INTO org_data.customers VALUES ('{other_id}', 77, 'x', 'CH', 's', "
        "NULL, now()) RETURNING 1) SELECT * FROM x",
        "writable_cte",
    ),
    Escape(
        "writable_cte_update_view",
        "WITH u AS (UPDATE orders SET amount = 0 RETURNING id) SELECT * FROM u",
        "writable_cte",
    ),
    Escape("for_update", "SELECT * FROM orders FOR UPDATE", "locking_clause"),
    Escape("for_share_nowait", "SELECT id FROM customers FOR SHARE NOWAIT", "locking_clause"),
    Escape("select_into", "SELECT * INTO stolen FROM orders", "select_into"),
    Escape("create_table_as", "CREATE TABLE stolen AS SELECT * FROM orders", "not_a_select"),
    Escape("create_temp", "CREATE TEMP TABLE scratch (a int)", "not_a_select"),
    # Time, other databases, files and large objects.
    Escape("pg_sleep", "SELECT pg_sleep(0.1)", "function_not_allowed"),
    Escape("pg_sleep_qualified", "SELECT pg_catalog.pg_sleep(0.1)", "function_not_allowed"),
    Escape(
        "dblink",
        "SELECT * FROM dblink('dbname=garrison', 'SELECT * FROM org_data.orders') AS t(a int)",
        "function_not_allowed",
    ),
    Escape("dblink_extension", "CREATE EXTENSION dblink", "not_a_select"),
    Escape("copy_to_stdout", "COPY org_data.orders TO STDOUT", "not_a_select"),
    Escape("copy_query", "COPY (SELECT * FROM org_data.orders) TO STDOUT", "not_a_select"),
    Escape("copy_to_file", "COPY (SELECT 1) TO '/tmp/garrison-stolen'", "not_a_select"),
    Escape("copy_program", "COPY (SELECT 1) TO PROGRAM 'id'", "not_a_select"),
    Escape("copy_from", "COPY org_data.orders FROM STDIN", "not_a_select"),
    Escape("lo_import", "SELECT lo_import('/etc/passwd')", "function_not_allowed"),
    Escape("lo_create", "SELECT lo_create(0)", "function_not_allowed"),
    Escape(
        "lo_from_bytea_read_write",
        "SET default_transaction_read_only = off; SELECT lo_from_bytea(0, 'stolen')",
        "multiple_statements",
    ),
    Escape("lo_export", "SELECT lo_export(1, '/tmp/garrison-lo')", "function_not_allowed"),
    Escape("pg_read_file", "SELECT pg_read_file('/etc/passwd')", "function_not_allowed"),
    Escape("pg_ls_dir", "SELECT * FROM pg_ls_dir('.')", "function_not_allowed"),
    Escape(
        "wal_message",
        "SELECT pg_logical_emit_message(true, 'garrison', 'x')",
        "function_not_allowed",
    ),
    Escape("notify", "NOTIFY garrison_run_events, 'x'", "not_a_select"),
    Escape("advisory_lock", "SELECT pg_advisory_lock(42)", "function_not_allowed"),
    Escape("nextval", "SELECT nextval('outbox_id_seq')", "function_not_allowed"),
    # Comment tricks: the parser sees what the server sees, and what runs is re-rendered.
    Escape(
        "comment_hides_nothing",
        "SELECT * FROM orders /* ; */ ; DELETE FROM org_data.orders",
        "multiple_statements",
    ),
    Escape(
        "line_comment_then_newline",
        "SELECT 1 -- harmless\n; DROP TABLE org_data.orders",
        "multiple_statements",
    ),
    Escape(
        "nested_comment",
        "SELECT 1 /* outer /* inner */ still a comment ; */ ; DELETE FROM org_data.orders",
        "multiple_statements",
    ),
    Escape(
        "comment_in_keyword",
        "SELECT * FROM pg_catalog/**/.pg_authid",
        "schema_not_allowed",
    ),
    Escape("comment_only", "/* SELECT 1 */ -- nothing", "empty"),
    Escape(
        "dollar_quote_hides_statement",
        "SELECT $$ ; $$, * FROM org_data.orders",
        "schema_not_allowed",
    ),
    # Other tenants' and the application's names.
    Escape("base_table", "SELECT * FROM org_data.orders", "schema_not_allowed"),
    Escape("app_table", "SELECT * FROM tenants", "relation_not_allowed"),
    Escape("app_table_qualified", "SELECT password FROM public.sql_roles", "schema_not_allowed"),
    Escape("state_records", "SELECT data FROM public.state_records", "schema_not_allowed"),
    Escape("steps", "SELECT result FROM steps", "relation_not_allowed"),
    Escape(
        "other_tenant_id_filter",
        "SELECT * FROM orders WHERE tenant_id = '{other_id}'",
        "",  # accepted by the guard (it is a plain SELECT): the view has no tenant_id column
    ),
    Escape("database_qualified", "SELECT * FROM garrison.tenant_data.orders", "schema_not_allowed"),
    Escape("search_path", "SET search_path = org_data, public", "not_a_select"),
    Escape(
        "search_path_then_select",
        "SET search_path = org_data; SELECT * FROM orders",
        "multiple_statements",
    ),
    Escape(
        "cte_shadowing_catalog",
        "WITH pg_authid AS (SELECT 1) SELECT * FROM pg_authid",
        "syntax_not_allowed",
    ),
    Escape(
        "cte_forward_reference",
        "WITH a AS (SELECT * FROM sql_roles), sql_roles AS (SELECT 1) SELECT * FROM a",
        "relation_not_allowed",
    ),
    Escape(
        "cte_out_of_scope",
        "SELECT * FROM (WITH customers AS (SELECT 1) SELECT * FROM customers) s, tenants",
        "relation_not_allowed",
    ),
    Escape("regclass_cast", "SELECT 'org_data.orders'::regclass::oid", "type_not_allowed"),
    Escape("current_user", "SELECT current_user, session_user", "function_not_allowed"),
    Escape("current_setting", "SELECT current_setting('search_path')", "function_not_allowed"),
    # Catalogs.
    Escape(
        "union_into_catalog",
        "SELECT name FROM customers UNION SELECT rolname FROM pg_authid",
        "relation_not_allowed",
    ),
    Escape(
        "union_catalog_qualified",
        "SELECT name FROM customers UNION ALL SELECT usename::text FROM pg_catalog.pg_user",
        "schema_not_allowed",
    ),
    Escape("information_schema", "SELECT * FROM information_schema.tables", "schema_not_allowed"),
    Escape("stat_activity", "SELECT query FROM pg_stat_activity", "relation_not_allowed"),
    Escape(
        "subquery_catalog",
        "SELECT (SELECT passwd FROM pg_shadow LIMIT 1) FROM orders",
        "relation_not_allowed",
    ),
    # Procedural code, prepared statements, psql.
    Escape("do_block", "DO $$ BEGIN DELETE FROM org_data.orders; END $$", "not_a_select"),
    Escape("prepare", "PREPARE steal AS SELECT * FROM org_data.orders", "not_a_select"),
    Escape("execute", "EXECUTE steal", "not_a_select"),
    Escape("explain_analyze", "EXPLAIN ANALYZE DELETE FROM org_data.orders", "not_a_select"),
    Escape("call", "CALL garrison_provision_sql_role('{other_id}')", "not_a_select"),
    Escape(
        "provision_function",
        "SELECT garrison_provision_sql_role('{other_id}')",
        "function_not_allowed",
    ),
    Escape("psql_copy", "\\copy org_data.orders to '/tmp/x'", "syntax_error"),
    Escape("psql_connect", "\\c garrison {other}", "syntax_error"),
    Escape("psql_gexec", "SELECT 'DELETE FROM org_data.orders' \\gexec", "syntax_error"),
    Escape("parameter", "SELECT * FROM orders WHERE id = $1", "parameter_not_allowed"),
    Escape("vacuum", "VACUUM org_data.orders", "not_a_select"),
    Escape("lock_table", "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE", "not_a_select"),
    Escape("truncate", "TRUNCATE org_data.orders", "not_a_select"),
    Escape("grant", "GRANT SELECT ON org_data.orders TO PUBLIC", "not_a_select"),
)
