"""`garrison keys ...`: the secret is shown once, listings never show it, revoking asks first."""

from __future__ import annotations

import pytest

from agent.errors import Unauthorized
from agent.runtime import Services, Settings
from ops.commands import keys as keys_command
from tests.cli.conftest import Cli, in_services


def authenticates(settings: Settings, secret: str) -> bool:
    async def check(services: Services) -> bool:
        try:
            await services.keys.authenticate(secret)
        except Unauthorized:
            return False
        return True

    return in_services(settings, check)


def test_create_shows_the_secret_once(cli: Cli, settings: Settings) -> None:
    cli.ok("tenants", "create", "acme")
    human = cli.ok("keys", "create", "--tenant", "acme", "--name", "ci")
    secret = next(
        line.split()[-1] for line in human.stdout.splitlines() if line.strip().startswith("secret")
    )
    assert secret.startswith("gk_")
    assert "shown once" in human.stdout  # the warning is part of what people read
    assert authenticates(settings, secret)

    made = cli.json("keys", "create", "-t", "acme", "--role", "client", "--role", "operator")
    assert made["secret"].startswith("gk_")
    assert "once" in made["warning"]
    assert made["key"]["roles"] == ["client", "operator"]
    assert made["key"]["tenant_name"] == "acme"
    assert authenticates(settings, made["secret"])

    listing = cli.ok("keys", "list")
    assert secret not in listing.stdout
    assert made["secret"] not in listing.stdout
    assert secret[:10] + "…" in listing.stdout
    assert listing.stdout.splitlines()[0].split()[:4] == ["ID", "PREFIX", "NAME", "ROLES"]
    listed = cli.json("keys", "list", "--tenant", "acme")["keys"]
    assert [k["name"] for k in listed] == ["ci", "cli"]
    assert all("secret" not in k and "key_hash" not in k for k in listed)
    assert listed[0]["last_used_at"] is not None  # authenticate() above used it
    assert listed[1]["revoked_at"] is None


def test_create_errors(cli: Cli) -> None:
    cli.fails(1, "not_found", "keys", "create", "--tenant", "nobody")
    cli.fails(1, "not_found", "keys", "list", "--tenant", "nobody")
    cli.ok("tenants", "create", "acme")
    bad_role = cli("keys", "create", "--tenant", "acme", "--role", "root")
    assert bad_role.exit_code == 2
    assert "error[usage]: " in bad_role.stderr
    assert cli.ok("keys", "list").stdout == "no API keys\n"


def test_revoke_refuses_without_confirmation_when_nobody_can_answer(
    cli: Cli, settings: Settings
) -> None:
    cli.ok("tenants", "create", "acme")
    made = cli.json("keys", "create", "--tenant", "acme")
    refused = cli.fails(1, "confirmation_required", "keys", "revoke", made["key"]["id"])
    assert "-y/--yes" in refused.stderr
    assert authenticates(settings, made["secret"])  # still valid

    revoked = cli.ok("keys", "revoke", made["key"]["id"], "-y")
    assert "revoked at" in revoked.stdout
    assert not authenticates(settings, made["secret"])
    again = cli.json("keys", "revoke", made["key"]["id"])  # already revoked: nothing to confirm
    assert again["already_revoked"] is True
    assert again["key"]["revoked_at"] is not None
    listed = cli.json("keys", "list")["keys"]
    assert listed[0]["revoked_at"] == again["key"]["revoked_at"]


def test_revoke_asks_at_a_terminal(
    cli: Cli, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys_command, "interactive", lambda: True)
    cli.ok("tenants", "create", "acme")
    made = cli.json("keys", "create", "--tenant", "acme")
    declined = cli("keys", "revoke", made["key"]["id"], input="n\n")
    assert declined.exit_code == 1
    assert "Revoke API key" in declined.stderr
    assert "error[cancelled]" in declined.stderr
    assert authenticates(settings, made["secret"])
    accepted = cli("keys", "revoke", made["key"]["id"], "--json", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert '"already_revoked": false' in accepted.stdout  # the prompt went to stderr
    assert not authenticates(settings, made["secret"])


def test_revoke_unknown_and_malformed_ids(cli: Cli) -> None:
    cli.fails(1, "not_found", "keys", "revoke", "00000000-0000-0000-0000-000000000000", "-y")
    malformed = cli("keys", "revoke", "not-a-uuid", "-y")
    assert malformed.exit_code == 2
    assert "error[usage]: " in malformed.stderr
