"""`garrison budgets set|clear|show`, and what a run that hit a budget looks like to operators."""

from __future__ import annotations

from agent.domain import Role
from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.cli.conftest import Cli, in_services, tenant


def test_set_show_and_clear(cli: Cli, settings: Settings) -> None:
    fx = tenant(settings, "acme")
    set_day = cli.ok("budgets", "set", "acme", "--tokens", "50000", "--steps", "200")
    assert set_day.stdout.splitlines()[0] == "set the daily budget of tenant 'acme' (tenant acme)"
    assert "tokens:     50000" in set_day.stdout
    assert "wall time:  unlimited" in set_day.stdout
    key = cli.json(
        "budgets", "set", "acme", "--key", "test key", "--tokens", "1000", "--tool-calls", "5"
    )["budget"]
    assert (key["scope"], key["subject"], key["period"]) == ("key", "test key", "day")
    assert key["subject_id"] == str(fx.principal.key_id)
    assert key["limits"] == {"tokens": 1000, "steps": None, "tool_calls": 5, "wall_s": None}
    run = cli.json(
        "budgets", "set", "acme", "--agent", "assistant", "--per", "run", "--wall-time", "90"
    )["budget"]
    assert run["limits"]["wall_s"] == 90

    shown = cli.json("budgets", "show", "--tenant", "acme")["budgets"]
    assert [(b["scope"], b["period"]) for b in shown] == [
        ("tenant", "day"),
        ("key", "day"),
        ("agent", "run"),
    ]
    assert shown[0]["usage"]["tokens_used"] == 0
    assert shown[0]["tenant"] == "acme"
    assert shown[2]["usage"] is None
    table = cli.ok("budgets", "show").stdout.splitlines()
    assert table[0].split() == [
        "TENANT", "SCOPE", "PER", "TOKENS", "STEPS", "TOOL", "CALLS", "WALL", "UPDATED",
    ]  # fmt: skip
    assert table[1].split()[:6] == ["acme", "tenant", "acme", "day", "0/50000", "0/200"]
    assert table[3].split()[:5] == ["acme", "agent", "assistant", "run", "-"]
    assert "90 s" in table[3]
    assert table[-1].startswith("daily use on ")

    cleared = cli.json("budgets", "clear", "acme", "--key", str(fx.principal.key_id))
    assert cleared["cleared"]["limits"]["tokens"] == 1000
    assert len(cli.json("budgets", "show")["budgets"]) == 2
    cli.fails(1, "not_found", "budgets", "clear", "acme", "--key", "test key")


def test_invalid_budgets_are_refused(cli: Cli, settings: Settings) -> None:
    tenant(settings, "acme")
    cli.fails(1, "invalid_request", "budgets", "set", "acme")
    cli.fails(1, "invalid_request", "budgets", "set", "acme", "--wall-time", "10")  # per day
    cli.fails(1, "invalid_request", "budgets", "set", "acme", "--tokens", "0")
    cli.fails(
        1, "invalid_request", "budgets", "set", "acme", "--key", "k", "--agent", "a", "--steps", "1"
    )
    cli.fails(1, "not_found", "budgets", "set", "nobody", "--steps", "1")
    cli.fails(1, "not_found", "budgets", "set", "acme", "--agent", "ghost", "--steps", "1")
    cli.fails(1, "not_found", "budgets", "set", "acme", "--key", "ghost", "--steps", "1")
    cli.fails(2, "usage", "budgets", "set", "acme", "--per", "week", "--steps", "1")
    cli.fails(2, "usage", "budgets", "show", "--day", "yesterday")
    assert cli.ok("budgets", "show").stdout == "no budgets set: every run is unlimited\n"


def test_a_key_name_shared_by_two_keys_needs_the_id(cli: Cli, settings: Settings) -> None:
    tenant(settings, "acme")

    async def second_key(services: Services) -> None:
        await services.keys.create("acme", "test key", [Role.CLIENT], actor="test")

    in_services(settings, second_key)
    result = cli.fails(
        1, "invalid_request", "budgets", "set", "acme", "--key", "test key", "--steps", "1"
    )
    assert "give its id" in result.stderr


def test_an_exhausted_run_shows_why(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer
) -> None:
    fx = tenant(settings, "acme")
    cli.ok("budgets", "set", "acme", "--per", "run", "--tokens", "10")

    async def drive(services: Services) -> str:
        run = await services.runs.submit(fx.principal, "assistant", "How many days of leave?")
        assert await services.worker().run_until_idle() == 1
        return str(run.id)

    run_id = in_services(settings, drive)
    assert scripted_model.chat_requests == []  # refused before any model call
    shown = cli.ok("runs", "show", run_id).stdout
    assert "budget_exhausted" in shown
    assert "failure:" in shown
    assert "Stopped: the per-run budget of tenant 'acme' for tokens is exhausted" in shown
    as_json = cli.json("runs", "show", run_id)
    assert as_json["run"]["failure_code"] == "budget_exhausted"
