"""`garrison keys create --access-tag`: the tags are stored, listed and checked, and a key that
is itself restricted cannot mint a key that sees more than it does."""

from __future__ import annotations

from tests.cli.conftest import Cli


def test_create_and_list_show_the_access_tags(cli: Cli) -> None:
    cli.ok("tenants", "create", "acme")
    made = cli.json(
        "keys", "create", "-t", "acme", "-n", "hr", "--access-tag", "legal", "--access-tag", "hr"
    )
    assert made["key"]["access_tags"] == ["hr", "legal"]
    human = cli.ok("keys", "create", "-t", "acme", "-n", "eng", "--access-tag", "eng")
    assert any(
        line.split(":", 1) == ["  access tags", " eng"] for line in human.stdout.splitlines()
    )
    cli.ok("keys", "create", "-t", "acme", "-n", "wide")

    listed = {k["name"]: k["access_tags"] for k in cli.json("keys", "list")["keys"]}
    assert listed == {"hr": ["hr", "legal"], "eng": ["eng"], "wide": None}
    table = cli.ok("keys", "list").stdout.splitlines()
    assert table[0].split()[:6] == ["ID", "PREFIX", "NAME", "ROLES", "ACCESS", "TAGS"]
    rows = {line.split()[2]: line.split()[4] for line in table[1:]}
    assert rows == {"hr": "hr,legal", "eng": "eng", "wide": "(all)"}


def test_bad_access_tags_are_refused(cli: Cli) -> None:
    cli.ok("tenants", "create", "acme")
    cli.fails(1, "invalid_request", "keys", "create", "-t", "acme", "--access-tag", " ")
    cli.fails(1, "invalid_request", "keys", "create", "-t", "acme", "--access-tag", "x" * 65)
    assert cli.ok("keys", "list").stdout == "no API keys\n"


def test_a_restricted_key_mints_only_narrower_keys(cli: Cli) -> None:
    cli.ok("tenants", "create", "acme")
    minter = cli.json(
        "keys", "create", "-t", "acme", "--role", "admin", "--access-tag", "hr",
        "--access-tag", "legal",
    )["secret"]  # fmt: skip
    as_minter = Cli({**cli.env, "GARRISON_API_KEY": minter})
    refused = as_minter.fails(1, "access_tag_required", "keys", "create", "-t", "acme")
    assert "hr, legal" in refused.stderr
    as_minter.fails(1, "access_tag_required", "keys", "create", "-t", "acme", "--access-tag", "eng")
    narrower = as_minter.json("keys", "create", "-t", "acme", "--access-tag", "legal")
    assert narrower["key"]["access_tags"] == ["legal"]
