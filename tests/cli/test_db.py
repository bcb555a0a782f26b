"""`garrison db status|upgrade`, and what other commands do with an outdated schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from datastore import migrate
from tests.cli.conftest import Cli
from tests.conftest import PgCluster, create_database, drop_database


@pytest.fixture
def empty_database(pg_cluster: PgCluster) -> Iterator[str]:
    name = create_database(pg_cluster, migrated=False)
    yield pg_cluster.url_for(name)
    drop_database(pg_cluster, name)


def test_status_of_a_current_database(cli: Cli, database_url: str) -> None:
    head = migrate.status(database_url).head
    human = cli.ok("db", "status").stdout
    assert human.splitlines() == [f"current: {head}", f"head:    {head}", "pending: none"]
    assert cli.json("db", "status") == {
        "current": head,
        "head": head,
        "pending": [],
        "up_to_date": True,
    }
    assert "already up to date" in cli.ok("db", "upgrade").stdout


def test_upgrade_an_empty_database(cli: Cli, empty_database: str) -> None:
    cli.env["GARRISON_DATABASE_URL"] = empty_database
    status = cli.json("db", "status")
    assert status["current"] is None
    assert status["pending"]
    assert not status["up_to_date"]
    assert "current: none (empty database)" in cli.ok("db", "status").stdout

    # An external database is never migrated behind the operator's back.
    outdated = cli.fails(3, "schema_outdated", "tenants", "list")
    assert "garrison db upgrade" in outdated.stderr

    upgraded = cli.json("db", "upgrade")
    assert upgraded["applied"] == status["pending"]
    assert upgraded["up_to_date"]
    assert upgraded["current"] == status["head"]
    assert cli.ok("tenants", "list").stdout == "no tenants yet\n"
    assert cli.json("db", "upgrade")["applied"] == []
