"""`garrison keys create --access-tag`: the tags are stored, listed and checked, a key with tags
cannot be an admin, and a key that is itself restricted cannot mint a key that sees more than it
does."""

from __future__ import annotations

from agent.domain import Role
from agent.runtime import Services, Settings
from agent.services.keys import KEY_PREFIX, hash_key
from tests.cli.conftest import Cli, in_services


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


def test_a_key_with_access_tags_cannot_be_an_admin(cli: Cli) -> None:
    cli.ok("tenants", "create", "acme")
    for roles in (("--role", "admin"), ("--role", "client", "--role", "admin")):
        refused = cli.fails(
            1, "invalid_request", "keys", "create", "-t", "acme", *roles, "--access-tag", "hr"
        )
        assert "a key with access tags cannot hold the admin role" in refused.stderr
    assert cli.ok("keys", "list").stdout == "no API keys\n"
    # Through a key as well: a tenant's admin key cannot mint one either.
    admin = cli.json("keys", "create", "-t", "acme", "-n", "gov", "--role", "admin")["secret"]
    as_admin = Cli({**cli.env, "GARRISON_API_KEY": admin})
    as_admin.fails(
        1, "invalid_request", "keys", "create", "-t", "acme", "--role", "admin",
        "--access-tag", "hr",
    )  # fmt: skip
    assert [k["name"] for k in cli.json("keys", "list")["keys"]] == ["gov"]


def legacy_restricted_admin(settings: Settings) -> str:
    """An admin key with access tags, as `keys create` made them before it refused to: stored
    through the key store directly, since the key service no longer mints one."""
    secret = KEY_PREFIX + "legacy-restricted-admin"

    async def store(services: Services) -> None:
        tenant = await services.tenancy.require_tenant("acme")
        await services.store.keys.create_key(
            tenant.id,
            "legacy",
            [Role.ADMIN],
            hash_key(secret),
            secret[:10],
            actor="test",
            access_tags=("hr", "legal"),
        )

    in_services(settings, store)
    return secret


def test_a_restricted_key_mints_only_narrower_keys(cli: Cli, settings: Settings) -> None:
    cli.ok("tenants", "create", "acme")
    minter = legacy_restricted_admin(settings)
    as_minter = Cli({**cli.env, "GARRISON_API_KEY": minter})
    refused = as_minter.fails(1, "access_tag_required", "keys", "create", "-t", "acme")
    assert "hr, legal" in refused.stderr
    as_minter.fails(1, "access_tag_required", "keys", "create", "-t", "acme", "--access-tag", "eng")
    narrower = as_minter.json("keys", "create", "-t", "acme", "--access-tag", "legal")
    assert narrower["key"]["access_tags"] == ["legal"]
