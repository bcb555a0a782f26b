"""The CLI with a key that has access tags sees only the runs submitted under a scope within its
tags, as through the API (tests/api/test_run_visibility.py): every other run of its tenant, and
its steps, events, side effects and approvals, is `not_found`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.domain import Principal, Role, Run, RunStatus
from agent.outbox.settings import OutboxSettings
from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.cli.conftest import Cli, in_services
from tests.conftest import make_tenant
from tests.outbox.conftest import finish, put_effect_agent, send_email

EXTERNAL_EMAIL = """
[[rules]]
name = "external-email"
tools = ["send_email"]
effect = "require_approval"
when = [{ arg = "to", part = "domain", not_in = ["acme.com"] }]
"""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Email configured, so that runs queue their emails in the outbox (nothing delivers them
    here: no dispatcher runs)."""
    outbox = OutboxSettings(smtp_host="127.0.0.1", smtp_from="garrison@acme.com")
    return settings.model_copy(update={"outbox": outbox})


@dataclass(frozen=True)
class Runs:
    wide: Run
    """Submitted by a key of the whole tenant."""
    mine: Run
    """Submitted by a key tagged `hr`."""
    broad: Run
    """Submitted by a key tagged `eng` and `hr`: wider than `hr`."""
    secret: str
    """A key tagged `hr`, with every role but the approver's."""


def emailed(settings: Settings, scripted: ScriptedModelServer, *, gated: bool = False) -> Runs:
    """One notifier run per scope, each driven to its end after one email, or, `gated`, to the
    approval the email waits for."""

    async def make(services: Services) -> Runs:
        fx = await make_tenant(services, "acme")
        await put_effect_agent(services, "acme")
        if gated:
            await services.policies.apply("acme", None, EXTERNAL_EMAIL, name="p", actor="test")

        async def key(*tags: str) -> tuple[Principal, str]:
            roles = [Role.OPERATOR, Role.APPROVER]
            _key, secret = await services.keys.create(
                "acme", "+".join(tags), roles, actor="test", access_tags=tags
            )
            return await services.keys.authenticate(secret), secret

        async def run(principal: Principal) -> Run:
            scripted.enqueue(send_email(["ann@partner.example"], "Quote", "100"))
            if not gated:
                scripted.enqueue(finish())
            submitted = await services.runs.submit(principal, "notifier", "email ann")
            await services.worker().run_until_idle()
            return await services.runs.get(submitted.id, None)

        (hr, secret), (broad, _) = await key("hr"), await key("eng", "hr")
        return Runs(await run(fx.principal), await run(hr), await run(broad), secret)

    return in_services(settings, make)


def test_runs_outbox_and_replay_show_a_restricted_key_only_its_runs(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer
) -> None:
    runs = emailed(settings, scripted_model)
    assert {r.status for r in (runs.wide, runs.mine, runs.broad)} == {RunStatus.SUCCEEDED}
    hr = Cli({**cli.env, "GARRISON_API_KEY": runs.secret})

    assert [r["id"] for r in hr.json("runs", "list")["runs"]] == [str(runs.mine.id)]
    assert len(cli.json("runs", "list")["runs"]) == 3
    outbox = hr.json("outbox", "list")["outbox"]
    assert [i["run_id"] for i in outbox] == [str(runs.mine.id)]
    everything = cli.json("outbox", "list")["outbox"]
    assert len(everything) == 3

    for hidden in (runs.wide, runs.broad):
        run_id = str(hidden.id)
        for args in (
            ("runs", "show", run_id),
            ("runs", "cancel", run_id),
            ("runs", "resume", run_id),
            ("runs", "replay", run_id),
            ("runs", "fork", run_id, "-n", "0"),
            ("outbox", "list", "--run", run_id),
        ):
            refused = hr.fails(1, "not_found", *args)
            assert f"run {run_id} not found" in refused.stderr
        watched = hr("runs", "watch", run_id)
        assert (watched.exit_code, watched.stdout) == (1, ""), watched.output
        assert "error[not_found]: " in watched.stderr
        [item] = [i for i in everything if i["run_id"] == run_id]
        hr.fails(1, "not_found", "outbox", "retry", str(item["id"]))
    assert len(cli.json("runs", "list")["runs"]) == 3  # nothing was forked

    mine = str(runs.mine.id)
    shown = hr.json("runs", "show", mine)
    assert [s["tool"] for s in shown["steps"]] == ["send_email", "finish"]
    assert "succeeded" in hr.ok("runs", "watch", mine).stdout
    assert hr.json("runs", "replay", mine)["match"] is True
    fork = hr.json("runs", "fork", mine, "-n", "1")["run"]

    async def forked(services: Services) -> Run:
        return await services.runs.get(uuid.UUID(fork["id"]), None)

    made = in_services(settings, forked)
    # The fork is the key's, as through the API, and keeps its parent's scope.
    assert (made.api_key_id, made.access_tags) == (runs.mine.api_key_id, ("hr",))
    assert hr.json("runs", "cancel", fork["id"])["run"]["status"] == "cancelled"


def test_a_restricted_approver_sees_and_decides_only_approvals_of_its_runs(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer
) -> None:
    runs = emailed(settings, scripted_model, gated=True)
    hr = Cli({**cli.env, "GARRISON_API_KEY": runs.secret})
    pending = {
        a["run_id"]: a["id"] for a in cli.json("approvals", "list", "-s", "pending")["approvals"]
    }
    assert len(pending) == 3

    listed = hr.json("approvals", "list", "-s", "pending")["approvals"]
    assert [a["run_id"] for a in listed] == [str(runs.mine.id)]
    assert hr.json("approvals", "list", "--run", str(runs.mine.id))["approvals"] == listed
    for hidden in (runs.wide, runs.broad):
        approval = pending[str(hidden.id)]
        # Asked by run, a hidden run is not found, as `outbox list --run` answers.
        refused = hr.fails(1, "not_found", "approvals", "list", "--run", str(hidden.id))
        assert f"run {hidden.id} not found" in refused.stderr
        assert len(cli.json("approvals", "list", "--run", str(hidden.id))["approvals"]) == 1
        hr.fails(1, "not_found", "approvals", "show", approval)
        hr.fails(1, "not_found", "approvals", "approve", approval)
        hr.fails(1, "not_found", "approvals", "deny", approval, "-m", "no")
        assert cli.json("approvals", "show", approval)["approval"]["status"] == "pending"
    approved = hr.json("approvals", "approve", pending[str(runs.mine.id)], "-m", "ok")
    assert approved["approval"]["status"] == "approved"


def test_resubmitting_an_idempotency_key_held_by_a_hidden_run_is_a_bare_conflict(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer
) -> None:
    runs = emailed(settings, scripted_model)
    hr = Cli({**cli.env, "GARRISON_API_KEY": runs.secret})
    submit = ("runs", "submit", "the merger plan", "-t", "acme", "-a", "assistant")
    held = cli.json(*submit, "-k", "k1")["run"]["id"]

    for task in ("the merger plan", "something else"):
        args = ("runs", "submit", task, "-t", "acme", "-a", "assistant", "-k", "k1")
        refused = hr.fails(1, "idempotency_key_reused", *args)
        assert held not in refused.stderr
        assert "merger" not in refused.stderr
    made = hr.json(*submit, "-k", "k2")
    again = hr.json(*submit, "-k", "k2")
    assert (made["replayed"], again["replayed"]) == (False, True)
    assert again["run"]["id"] == made["run"]["id"]


def test_policies_test_refuses_a_restricted_key(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer, tmp_path: Path
) -> None:
    runs = emailed(settings, scripted_model)
    policy = tmp_path / "p.toml"
    policy.write_text(EXTERNAL_EMAIL)
    hr = Cli({**cli.env, "GARRISON_API_KEY": runs.secret})
    args = ("policies", "test", str(policy), "--against-runs", "-t", "acme")
    refused = hr.fails(1, "forbidden", *args)
    assert "use a key without access tags" in refused.stderr
    assert cli.json(*args)["runs"] == 3
