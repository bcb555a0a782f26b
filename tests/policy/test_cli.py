"""`garrison policies ...` and `garrison approvals ...` in-process, against a fresh database:
versions, diffs, line-precise refusals, a draft tested against recorded runs, and decisions."""

from __future__ import annotations

from pathlib import Path

from agent.domain import Run, RunStatus
from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.cli.conftest import Cli, gated_email_run, in_services
from tests.conftest import make_tenant
from tests.outbox.conftest import finish, put_effect_agent, send_email

V1 = 'description = "first"\n[tools]\ndeny = ["http_request"]\n'
V2 = V1.replace("first", "second") + "\n[approvals]\nttl_s = 600\n"
EXTERNAL = """
[[rules]]
name = "external-email"
tools = ["send_email"]
effect = "require_approval"
when = [{ arg = "to", part = "domain", not_in = ["acme.com"] }]
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_apply_show_history_and_diff(cli: Cli, settings: Settings, tmp_path: Path) -> None:
    in_services(settings, lambda s: make_tenant(s, "acme"))
    v1 = write(tmp_path, "v1.toml", V1)
    applied = cli.json("policies", "apply", v1, "--tenant", "acme")
    assert (applied["created"], applied["policy"]["version"]) == (True, 1)
    assert cli.ok("policies", "apply", v1, "-t", "acme").stdout.strip() == (
        "acme: unchanged, version 1 already has this content"
    )
    v2 = write(tmp_path, "v2.toml", V2)
    assert "acme: policy version 2 applied" in cli.ok("policies", "apply", v2, "-t", "acme").stdout

    shown = cli.ok("policies", "show", "-t", "acme").stdout
    assert shown.splitlines()[0].startswith("# acme policy version 2, applied ")
    assert "ttl_s = 600" in shown
    assert cli.json("policies", "show", "-t", "acme", "--version", "1")["policy"]["source"] == V1
    history = cli.json("policies", "history", "-t", "acme")["policies"]
    assert [p["version"] for p in history] == [2, 1]
    assert history[0]["applied_by"].startswith("cli:")

    latest = cli.json("policies", "diff", "-t", "acme")
    assert (latest["from"], latest["to"], latest["changed"]) == ("acme v1", "acme v2", True)
    assert '-description = "first"' in latest["diff"]
    assert "+ttl_s = 600" in latest["diff"]
    same = cli.ok("policies", "diff", "-t", "acme", v2).stdout
    assert same.strip() == f"no difference: acme v2 = {v2}"
    assert cli.json("policies", "diff", "-t", "acme", v2, "--from", "1")["changed"] is True
    cli.fails(1, "not_found", "policies", "show", "-t", "acme", "--version", "9")
    cli.fails(1, "not_found", "policies", "history", "-t", "acme", "--agent", "nobody")
    assert cli.json("policies", "history", "-t", "acme", "-a", "assistant")["policies"] == []


def test_a_bad_file_is_refused_with_its_lines(cli: Cli, settings: Settings, tmp_path: Path) -> None:
    in_services(settings, lambda s: make_tenant(s, "acme"))
    bad = write(tmp_path, "bad.toml", '[tools]\ndeny = ["finish"]\n\n[[rules]]\nname = "x"\n')
    failed = cli.fails(1, "invalid_policy", "policies", "apply", bad, "-t", "acme")
    assert f"{bad}:2: tools.deny: 'finish' must stay allowed" in failed.stderr
    assert f"{bad}:4: rules[0].effect: required" in failed.stderr
    cli.fails(
        1, "invalid_policy", "policies", "apply", str(tmp_path / "missing.toml"), "-t", "acme"
    )
    cli.fails(1, "not_found", "policies", "show", "-t", "acme")


def test_a_draft_is_tested_against_recorded_runs(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer, tmp_path: Path
) -> None:
    async def record(services: Services) -> Run:
        fx = await make_tenant(services, "acme")
        await put_effect_agent(services, "acme")
        scripted_model.enqueue(send_email(["ann@acme.com"], "Hi", "inside"))
        scripted_model.enqueue(send_email(["eve@partner.example"], "Hi", "outside"))
        scripted_model.enqueue(finish())
        run = await services.runs.submit(fx.principal, "notifier", "tell ann and eve")
        await services.worker().run_until_idle()
        return await services.runs.get(run.id, None)

    run = in_services(settings, record)
    assert run.status is RunStatus.SUCCEEDED
    draft = write(tmp_path, "draft.toml", EXTERNAL)
    report = cli.json("policies", "test", draft, "--against-runs", "-t", "acme")
    assert (report["runs"], report["steps"], report["changed"]) == (1, 3, 1)
    [change] = report["changes"]
    assert (change["run_id"], change["step"], change["tool"]) == (str(run.id), 2, "send_email")
    assert change["recorded"]["verdict"] == "allow"
    assert change["draft"]["verdict"] == "require_approval"
    assert change["draft"]["rule"] == "external-email"
    assert change["draft"]["version"] == {"tenant": "draft", "agent": None}
    human = cli.ok("policies", "test", draft, "--against-runs").stdout
    assert f"{run.id}:2" in human
    assert "1 of 3 recorded action(s) in 1 run(s) would be decided differently" in human
    scoped = cli.json("policies", "test", draft, "--against-runs", "-t", "acme", "-a", "notifier")
    assert scoped["changes"][0]["draft"]["version"] == {"tenant": None, "agent": "draft"}
    other = cli.json("policies", "test", draft, "--against-runs", "-t", "acme", "-a", "assistant")
    assert (other["runs"], other["changed"]) == (0, 0)  # only that agent's runs are judged
    same = write(tmp_path, "same.toml", 'description = "nothing"\n')
    assert "no change" in cli.ok("policies", "test", same, "--against-runs", "-t", "acme").stdout
    cli.fails(2, "usage", "policies", "test", draft)
    cli.fails(1, "invalid_request", "policies", "test", draft, "--against-runs", "-a", "notifier")


def test_approvals_are_listed_shown_and_decided(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer, tmp_path: Path
) -> None:
    run = gated_email_run(settings, scripted_model, EXTERNAL)
    [pending] = cli.json("approvals", "list", "--status", "pending")["approvals"]
    assert (pending["run_id"], pending["step"], pending["tool"]) == (str(run.id), 1, "send_email")
    approval_id = pending["id"]
    shown = cli.ok("approvals", "show", approval_id).stdout
    assert "external-email" in shown
    assert "eve@partner.example" in shown
    assert cli.json("approvals", "list", "-t", "acme", "--run", str(run.id))["approvals"]

    edit = '{"to": ["eve@partner.example"], "subject": "Quote", "body": ""}'
    cli.fails(1, "invalid_request", "approvals", "approve", approval_id, "--arguments", edit)
    cli.fails(1, "invalid_request", "approvals", "approve", approval_id, "--arguments", "[1]")
    denied = cli.json("approvals", "deny", approval_id, "--reason", "no quotes by email")
    assert denied["approval"]["status"] == "denied"
    assert denied["approval"]["decided_by"].startswith("cli:")
    cli.fails(1, "approval_decided", "approvals", "approve", approval_id)
    assert cli.json("approvals", "list", "--status", "pending")["approvals"] == []
    assert in_services(settings, lambda s: s.runs.get(run.id, None)).status is RunStatus.QUEUED
