"""`garrison db status|upgrade`, and what other commands do with an outdated schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.domain import Role
from agent.runtime import Settings
from datastore import migrate
from datastore.store import DatabaseLocation
from ops import runtime
from tests.cli.conftest import Cli, in_services
from tests.conftest import PgCluster, create_database, drop_database, make_tenant


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


def test_a_keyed_command_never_migrates_even_the_embedded_database(
    cli: Cli, settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = in_services(settings, lambda s: make_tenant(s, "acme", roles=(Role.ADMIN,))).secret
    migrate.downgrade(database_url, "-1")
    behind = migrate.status(database_url)
    assert len(behind.pending) == 1

    class Embedded(DatabaseLocation):
        """The embedded server, played by this test's database: what `auto` would migrate."""

        def resolve(self) -> str:
            return database_url

    monkeypatch.setattr(runtime, "DatabaseLocation", Embedded)
    embedded = Cli({k: v for k, v in cli.env.items() if k != "GARRISON_DATABASE_URL"})
    # A tenant's admin key, and a key nobody has looked up yet (that is done after the schema
    # step): neither may change the schema, which is the host's to upgrade.
    for key in (secret, "gk_unknown"):
        refused = embedded.fails(3, "schema_outdated", "--key", key, "runs", "list")
        assert "garrison db upgrade" in refused.stderr
        assert migrate.status(database_url) == behind
    # The host's administrator (no key) still has the embedded database brought up to date.
    assert embedded.json("runs", "list")["runs"] == []
    assert migrate.status(database_url).up_to_date
