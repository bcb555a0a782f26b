"""Agent-scoped policies end to end, on real Postgres with a real worker: a tenant's policy and
one agent's, applied through the service and through `garrison policies apply -t T -a A`; the
agent's stricter rule governs that agent's runs only, the tenant's rules govern every agent's,
and `policies show/history -a A` show the agent's own versions."""

from __future__ import annotations

from pathlib import Path

from agent.domain import RunStatus, Step
from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.cli.conftest import Cli, in_services
from tests.conftest import TenantFixture, make_tenant
from tests.outbox.conftest import finish, http_request, put_effect_agent, send_email
from tests.policy.conftest import apply, drive

TENANT = 'description = "acme: nothing over HTTP"\n[tools]\ndeny = ["http_request"]\n'
NOTIFIER = """description = "notifier: nothing leaves acme.com"

[[rules]]
name = "internal-only"
tools = ["send_email"]
effect = "deny"
reason = "the notifier writes to acme.com only"
when = [{ arg = "to", part = "domain", not_in = ["acme.com"] }]
"""
TENANT_ONLY = {"tenant": 1, "agent": None}


async def judged_run(
    services: Services, fx: TenantFixture, model: ScriptedModelServer, agent: str
) -> list[Step]:
    """A run of `agent` whose model asks for an HTTP request, then an email to a partner, then
    finishes; its steps."""
    model.enqueue(http_request("POST", "http://127.0.0.1:9/hook"))
    model.enqueue(send_email(["eve@partner.example"], "Quote", "Our quote: 100"))
    model.enqueue(finish())
    run = await services.runs.submit(fx.principal, agent, "tell eve")
    done = await drive(services, run)
    assert done.status is RunStatus.SUCCEEDED, (done.failure_code, done.failure_detail)
    return await services.runs.steps(run.id, fx.tenant.id)


def assert_governed(notifier: list[Step], courier: list[Step], agent_version: int) -> None:
    """The tenant's deny reaches both agents; the notifier's rule only the notifier."""
    both = {"tenant": 1, "agent": agent_version}
    http, email, _ = notifier
    assert (http.decision["policy"]["verdict"], http.decision["policy"]["rule"]) == (
        "deny",
        "tools.deny",
    )
    assert (email.decision["policy"]["verdict"], email.decision["policy"]["rule"]) == (
        "deny",
        "internal-only",
    )
    assert email.result is not None
    assert email.result["error"]["code"] == "policy_denied"
    assert [s.decision["policy"]["version"] for s in notifier] == [both] * 3

    http, email, _ = courier
    assert (http.decision["policy"]["verdict"], http.decision["policy"]["rule"]) == (
        "deny",
        "tools.deny",
    )
    assert email.decision["policy"]["verdict"] == "allow"
    assert email.result is not None
    assert email.result["queued"] is True
    assert [s.decision["policy"]["version"] for s in courier] == [TENANT_ONLY] * 3


async def test_an_agent_policy_tightens_its_agent_only_and_the_tenant_policy_reaches_all(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await put_effect_agent(services, "acme", "notifier")
    await put_effect_agent(services, "acme", "courier")
    assert await apply(services, "acme", TENANT) == 1
    assert await apply(services, "acme", NOTIFIER, agent="notifier") == 1

    # The worker reads both scopes in one query: the tenant's row and this agent's, no other.
    active = await services.store.policies.active(acme.tenant.id, "notifier")
    assert sorted((r.agent_name or "", r.version) for r in active) == [("", 1), ("notifier", 1)]
    assert [
        r.agent_name for r in await services.store.policies.active(acme.tenant.id, "courier")
    ] == [None]

    notifier = await judged_run(services, acme, scripted_model, "notifier")
    courier = await judged_run(services, acme, scripted_model, "courier")
    assert_governed(notifier, courier, agent_version=1)
    assert notifier[1].decision["policy"]["reason"] == "the notifier writes to acme.com only"
    [sent] = await services.outbox.list(acme.tenant.id, run_id=courier[0].run_id)
    assert sent.kind == "email"
    assert await services.outbox.list(acme.tenant.id, run_id=notifier[0].run_id) == []


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_policies_applied_with_the_cli_per_agent_govern_runs_and_show_per_scope(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer, tmp_path: Path
) -> None:
    async def agents(services: Services) -> TenantFixture:
        fx = await make_tenant(services, "acme")
        await put_effect_agent(services, "acme", "notifier")
        await put_effect_agent(services, "acme", "courier")
        return fx

    fx = in_services(settings, agents)
    tenant_file = write(tmp_path, "acme.toml", TENANT)
    agent_file = write(tmp_path, "notifier.toml", NOTIFIER)
    applied = cli.json("policies", "apply", agent_file, "-t", "acme", "-a", "notifier")
    assert (applied["created"], applied["policy"]["agent"], applied["policy"]["version"]) == (
        True,
        "notifier",
        1,
    )
    assert cli.ok("policies", "apply", tenant_file, "-t", "acme").stdout.strip() == (
        "acme: policy version 1 applied"
    )
    tightened = NOTIFIER.replace("acme.com only", "acme.com, nowhere else")
    second = write(tmp_path, "notifier2.toml", tightened)
    assert cli.ok("policies", "apply", second, "-t", "acme", "-a", "notifier").stdout.strip() == (
        "acme/notifier: policy version 2 applied"
    )
    cli.fails(1, "not_found", "policies", "apply", agent_file, "-t", "acme", "-a", "nobody")

    # show and history of the agent's scope: its versions, not the tenant's.
    shown = cli.ok("policies", "show", "-t", "acme", "-a", "notifier").stdout
    assert shown.splitlines()[0].startswith("# acme/notifier policy version 2, applied ")
    assert "acme.com, nowhere else" in shown
    first = cli.json("policies", "show", "-t", "acme", "-a", "notifier", "--version", "1")
    assert (first["policy"]["agent"], first["policy"]["source"]) == ("notifier", NOTIFIER)
    history = cli.json("policies", "history", "-t", "acme", "-a", "notifier")["policies"]
    assert [(p["agent"], p["version"]) for p in history] == [("notifier", 2), ("notifier", 1)]
    table = cli.ok("policies", "history", "-t", "acme", "-a", "notifier").stdout
    assert "notifier: nothing leaves acme.com" in table
    tenant_history = cli.json("policies", "history", "-t", "acme")["policies"]
    assert [(p["agent"], p["version"]) for p in tenant_history] == [(None, 1)]
    assert cli.json("policies", "history", "-t", "acme", "-a", "courier")["policies"] == []

    async def runs(services: Services) -> tuple[list[Step], list[Step]]:
        return (
            await judged_run(services, fx, scripted_model, "notifier"),
            await judged_run(services, fx, scripted_model, "courier"),
        )

    notifier, courier = in_services(settings, runs)
    assert_governed(notifier, courier, agent_version=2)
    assert (
        notifier[1].decision["policy"]["reason"] == "the notifier writes to acme.com, nowhere else"
    )
