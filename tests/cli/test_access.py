"""`garrison --key ...`: the CLI acting as an API key, with its roles and within its tenant, and
as the local administrator without one (unless GARRISON_CLI_REQUIRE_KEY refuses that).

Every command needs the role `ops.command_roles` names, or is a host command that no key may
run; the table is checked against the commands actually registered, so a new command cannot run
without a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup

from agent.domain import ApiKey, Role, Run, RunStatus
from agent.runtime import Services, Settings
from ops.access import Gate
from ops.cli import app
from ops.command_roles import COMMAND_ROLES, HOST, UndeclaredCommand
from serving.testing.scripted import ScriptedModelServer
from tests.cli.conftest import Cli, gated_email_run, in_services
from tests.conftest import make_tenant

EXTERNAL_EMAIL = """
[[rules]]
name = "external-email"
tools = ["send_email"]
effect = "require_approval"
when = [{ arg = "to", part = "domain", not_in = ["acme.com"] }]
"""


@dataclass(frozen=True)
class Key:
    key: ApiKey
    secret: str

    @property
    def actor(self) -> str:
        return f"key:{self.key.id}"


def mint(settings: Settings, tenant: str, *roles: Role) -> Key:
    async def create(services: Services) -> Key:
        key, secret = await services.keys.create(tenant, "+".join(roles), roles, actor="test")
        return Key(key, secret)

    return in_services(settings, create)


def with_key(cli: Cli, secret: str) -> Cli:
    """The same CLI with GARRISON_API_KEY set (`--key` is the other way to give one)."""
    return Cli({**cli.env, "GARRISON_API_KEY": secret})


def registered(group: TyperGroup, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, TyperGroup):
            paths |= registered(command, f"{path} ")
        else:
            paths.add(path)
    return paths


HOST_COMMANDS = {
    *("up", "serve", "worker", "reindex", "calibrate"),
    *("db upgrade", "db status", "engine install", "engine status"),
    *("tenants create", "tenants list", "audit verify", "audit export"),
    *(f"models {verb}" for verb in ("list", "sync", "health", "import-gguf")),
    *(f"models {verb}" for verb in ("serve", "stop", "status", "logs")),
}
"""What acts on the whole appliance, past any one tenant: changing this set is a decision."""


def test_every_registered_command_has_exactly_one_row() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    commands = registered(root)
    assert len(commands) > 40  # the walk really reached every noun's verbs
    assert commands - set(COMMAND_ROLES) == set(), "commands without a role"
    assert set(COMMAND_ROLES) - commands == set(), "a role for a command nobody registered"
    assert {c for c, needed in COMMAND_ROLES.items() if needed is HOST} == HOST_COMMANDS
    assert {needed for c, needed in COMMAND_ROLES.items() if c not in HOST_COMMANDS} == set(Role)


def test_a_command_without_a_row_is_refused_for_every_caller() -> None:
    with pytest.raises(UndeclaredCommand, match="`garrison tenants delete` has no row"):
        Gate("tenants delete", None, require_key=False)
    with pytest.raises(UndeclaredCommand):
        Gate("tenants delete", "gk_anything", require_key=False)


def gated_run(settings: Settings, scripted_model: ScriptedModelServer) -> Run:
    """acme's notifier waiting for approval to email outside acme; globex exists beside it."""
    return gated_email_run(settings, scripted_model, EXTERNAL_EMAIL, others=("globex",))


def test_an_approver_key_decides_its_own_tenants_approvals_only(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer
) -> None:
    run = gated_run(settings, scripted_model)
    [pending] = cli.json("approvals", "list", "--status", "pending")["approvals"]
    approval_id = pending["id"]
    acme = with_key(cli, mint(settings, "acme", Role.APPROVER).secret)
    acme_key = mint(settings, "acme", Role.APPROVER)
    globex = with_key(cli, mint(settings, "globex", Role.APPROVER).secret)
    client = with_key(cli, mint(settings, "acme", Role.CLIENT, Role.OPERATOR).secret)

    # Another tenant's approval does not exist for the key, and its tenant cannot be named.
    assert globex.json("approvals", "list", "--status", "pending")["approvals"] == []
    globex.fails(1, "not_found", "approvals", "show", approval_id)
    globex.fails(1, "not_found", "approvals", "approve", approval_id)
    globex.fails(1, "not_found", "approvals", "deny", approval_id, "-m", "no")
    refused = globex.fails(1, "forbidden", "approvals", "list", "--tenant", "acme")
    assert "acts for tenant 'globex' only, not 'acme'" in refused.stderr
    # Deciding takes the approver role, which neither client nor operator holds.
    refused = client.fails(1, "forbidden", "approvals", "approve", approval_id)
    assert "lacks the approver role, which `garrison approvals approve` needs" in refused.stderr
    assert "(its roles: client, operator)" in refused.stderr

    listed = acme.json("approvals", "list", "-t", "acme")["approvals"]
    assert [a["id"] for a in listed] == [approval_id]
    assert "external-email" in acme.ok("approvals", "show", approval_id).stdout
    approved = cli.json("--key", acme_key.secret, "approvals", "approve", approval_id, "-m", "ok")
    assert approved["approval"]["status"] == "approved"
    assert approved["approval"]["decided_by"] == acme_key.actor
    after = in_services(settings, lambda s: s.runs.get(run.id, None))
    assert after.status is RunStatus.QUEUED


def test_applying_a_policy_takes_an_admin_key_of_that_tenant(
    cli: Cli, settings: Settings, tmp_path: Path
) -> None:
    in_services(settings, lambda s: make_tenant(s, "acme"))
    in_services(settings, lambda s: make_tenant(s, "globex"))
    policy = tmp_path / "p.toml"
    policy.write_text('description = "keys"\n[tools]\ndeny = ["http_request"]\n')
    client = with_key(cli, mint(settings, "acme", Role.CLIENT).secret)
    admin_key = mint(settings, "acme", Role.ADMIN)
    admin = with_key(cli, admin_key.secret)

    refused = client.fails(1, "forbidden", "policies", "apply", str(policy), "-t", "acme")
    assert "lacks the admin role" in refused.stderr
    admin.fails(1, "forbidden", "policies", "apply", str(policy), "-t", "globex")
    applied = admin.json("policies", "apply", str(policy), "-t", "acme")
    assert (applied["created"], applied["policy"]["applied_by"]) == (True, admin_key.actor)
    # Nothing was stored for globex, and the client's refusal changed nothing for acme.
    cli.fails(1, "not_found", "policies", "show", "-t", "globex")
    assert [p["version"] for p in cli.json("policies", "history", "-t", "acme")["policies"]] == [1]


def test_a_key_sees_its_own_tenant_only(cli: Cli, settings: Settings) -> None:
    async def runs(services: Services) -> tuple[Run, Run]:
        acme = await make_tenant(services, "acme")
        globex = await make_tenant(services, "globex")
        mine = await services.runs.submit(acme.principal, "assistant", "hello")
        theirs = await services.runs.submit(globex.principal, "assistant", "hello")
        return mine, theirs

    mine, theirs = in_services(settings, runs)
    admin_key = mint(settings, "acme", Role.ADMIN)
    admin = with_key(cli, admin_key.secret)
    assert [r["id"] for r in admin.json("runs", "list")["runs"]] == [str(mine.id)]
    assert {k["tenant_name"] for k in admin.json("keys", "list")["keys"]} == {"acme"}
    admin.fails(1, "not_found", "runs", "show", str(theirs.id))
    admin.fails(1, "not_found", "runs", "cancel", str(theirs.id))
    admin.fails(1, "forbidden", "runs", "submit", "hi", "-t", "globex", "-a", "assistant")
    # A run it submits is the key's, as through the API, and so is the audit entry it leaves.
    submitted = admin.json("runs", "submit", "hi", "-t", "acme", "-a", "assistant")["run"]
    cancelled = admin.json("runs", "cancel", submitted["id"])["run"]
    assert cancelled["status"] == "cancelled"

    async def cancellers(services: Services) -> list[str]:
        entries = await services.store.audit.list_entries(mine.tenant_id, 20)
        return [e.actor for e in entries if e.action == "run.cancel"]

    assert in_services(settings, cancellers) == [admin_key.actor]


def test_a_key_revokes_keys_of_its_own_tenant_only(cli: Cli, settings: Settings) -> None:
    in_services(settings, lambda s: make_tenant(s, "acme"))
    in_services(settings, lambda s: make_tenant(s, "globex"))
    admin = with_key(cli, mint(settings, "acme", Role.ADMIN).secret)
    theirs = mint(settings, "globex", Role.CLIENT)
    mine = mint(settings, "acme", Role.CLIENT)

    for args in (("--yes",), ()):  # refused before any confirmation is asked for
        refused = admin.fails(1, "not_found", "keys", "revoke", str(theirs.key.id), *args)
        assert f"API key {theirs.key.id} not found" in refused.stderr
    assert [k["revoked_at"] for k in cli.json("keys", "list", "-t", "globex")["keys"]] == [
        None,
        None,
    ]
    assert with_key(cli, theirs.secret).json("runs", "list")["runs"] == []  # still works
    revoked = admin.json("keys", "revoke", str(mine.key.id), "--yes")["key"]
    assert revoked["id"] == str(mine.key.id)
    assert revoked["revoked_at"] is not None


def test_a_revoked_or_unknown_key_is_refused(cli: Cli, settings: Settings) -> None:
    in_services(settings, lambda s: make_tenant(s, "acme"))
    admin_key = mint(settings, "acme", Role.ADMIN)
    admin = with_key(cli, admin_key.secret)
    assert admin.json("keys", "list")["keys"]
    cli.ok("keys", "revoke", str(admin_key.key.id), "--yes")
    for args in (("runs", "list"), ("keys", "list")):
        refused = admin.fails(1, "unauthorized", *args)
        assert "unknown or revoked" in refused.stderr
        cli.fails(1, "unauthorized", "--key", "gk_unknown", *args)
    cli.fails(1, "unauthorized", "--key", "not-a-key", "runs", "list")


def test_host_commands_refuse_every_key_and_run_without_one(
    cli: Cli, settings: Settings, tmp_path: Path
) -> None:
    in_services(settings, lambda s: make_tenant(s, "acme"))
    admin = with_key(cli, mint(settings, "acme", Role.ADMIN).secret)
    unknown = with_key(cli, "gk_unknown")
    export = str(tmp_path / "audit.jsonl")
    for args in (
        ("tenants", "create", "initech"),
        ("tenants", "list"),
        ("audit", "verify"),
        ("audit", "export", "-o", export),
        ("db", "status"),
        ("db", "upgrade"),
        ("models", "list"),
        ("engine", "status"),
        ("reindex",),
        ("worker",),
    ):
        command = " ".join(a for a in args[:2] if not a.startswith("-"))
        # Even a tenant's admin key, and refused before the key is looked up: a host command
        # reaches every tenant, which no key of one tenant may.
        for keyed in (admin, unknown):
            refused = keyed(*args)  # not `fails`: `audit export` has no --json
            assert (refused.exit_code, refused.stdout) == (1, ""), refused.output
            assert "error[forbidden]: " in refused.stderr
            assert f"`garrison {command}` acts on the whole appliance" in refused.stderr
            assert "as the host's administrator, without an API key" in refused.stderr
    assert not (tmp_path / "audit.jsonl").exists()
    # Without a key, the host's administrator runs them, and sees every tenant.
    assert [t["name"] for t in cli.json("tenants", "list")["tenants"]] == ["acme"]
    assert cli.json("db", "status")["up_to_date"] is True
    assert cli.json("audit", "verify")["ok"] is True


def test_require_key_mode_refuses_tenant_commands_without_a_key(
    cli: Cli, settings: Settings
) -> None:
    in_services(settings, lambda s: make_tenant(s, "acme"))
    strict = Cli({**cli.env, "GARRISON_CLI_REQUIRE_KEY": "true"})
    for args in (("runs", "list"), ("keys", "list"), ("docs", "list", "-t", "acme")):
        refused = strict.fails(1, "key_required", *args)
        assert "pass --key or set GARRISON_API_KEY" in refused.stderr
    assert "Usage" in strict.ok("--help").stdout  # help needs nothing
    assert "Usage" in strict.ok("runs", "list", "--help").stdout
    # Host commands are not tenant-scoped: the host's administrator runs them without a key.
    assert strict.json("db", "status")["up_to_date"] is True
    assert [t["name"] for t in strict.json("tenants", "list")["tenants"]] == ["acme"]

    admin = with_key(strict, mint(settings, "acme", Role.ADMIN).secret)
    assert {k["tenant_name"] for k in admin.json("keys", "list")["keys"]} == {"acme"}
    admin.fails(1, "forbidden", "tenants", "list")
    approver = with_key(strict, mint(settings, "acme", Role.APPROVER).secret)
    approver.fails(1, "forbidden", "runs", "list")

    odd = Cli({**cli.env, "GARRISON_CLI_REQUIRE_KEY": "perhaps"})
    refused = odd.fails(2, "invalid_configuration", "runs", "list")
    assert "GARRISON_CLI_REQUIRE_KEY" in refused.stderr
