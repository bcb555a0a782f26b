"""Failures every command shares: the database, the configuration, the command line."""

from __future__ import annotations

import json

from tests.cli.conftest import Cli
from tests.conftest import PgCluster


def test_database_unavailable(cli: Cli, pg_cluster: PgCluster) -> None:
    cli.env["GARRISON_DATABASE_URL"] = pg_cluster.url_for("no_such_database")
    for args in (["runs", "list"], ["db", "status"], ["tenants", "create", "acme"]):
        result = cli.fails(3, "database_unavailable", *args)
        assert 'database "no_such_database" does not exist' in result.stderr
        assert "Traceback" not in result.output


def test_invalid_configuration(cli: Cli) -> None:
    cli.env["GARRISON_DATABASE_URL"] = "mysql://localhost/garrison"
    result = cli.fails(2, "invalid_configuration", "tenants", "list")
    assert "GARRISON_DATABASE_URL: GARRISON_DATABASE_URL must be a postgresql:// URL" in (
        result.stderr
    )
    cli.env["GARRISON_DATABASE_URL"] = "postgresql://localhost/x"
    cli.env["GARRISON_API_PORT"] = "99999"
    port = cli.fails(2, "invalid_configuration", "runs", "list")
    assert "GARRISON_API_PORT: " in port.stderr


def test_usage_errors(cli: Cli) -> None:
    unknown = cli("nope")
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("error[usage]: No such command 'nope'")
    missing = cli("runs", "show", "--json")
    assert missing.exit_code == 2
    assert missing.stdout == ""
    error = json.loads(missing.stderr)["error"]
    assert error["code"] == "usage"
    assert "garrison runs show --help" in error["message"]


def test_help_lists_every_noun(cli: Cli) -> None:
    text = cli.ok("--help").stdout
    for noun in ("up", "serve", "worker", "db", "tenants", "agents", "keys", "docs", "runs"):
        assert noun in text
    assert cli.ok("runs", "--help").stdout.count("show") >= 1
