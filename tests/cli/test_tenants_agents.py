"""`garrison tenants ...` and `garrison agents ...`."""

from __future__ import annotations

from tests.cli.conftest import Cli


def test_tenants_create_and_list(cli: Cli) -> None:
    created = cli.ok("tenants", "create", "acme")
    assert created.stdout.startswith("created tenant acme (")
    again = cli.json("tenants", "create", "acme")
    assert again["created"] is False
    assert again["tenant"]["name"] == "acme"
    assert cli.json("tenants", "create", "globex")["created"] is True

    listing = cli.ok("tenants", "list").stdout.splitlines()
    assert listing[0].split() == ["NAME", "ID", "CREATED"]
    assert [line.split()[0] for line in listing[1:]] == ["acme", "globex"]
    tenants = cli.json("tenants", "list")["tenants"]
    assert [t["name"] for t in tenants] == ["acme", "globex"]
    assert tenants[0]["id"] == again["tenant"]["id"]


def test_tenants_list_empty_and_bad_name(cli: Cli) -> None:
    assert cli.ok("tenants", "list").stdout == "no tenants yet\n"
    assert cli.json("tenants", "list") == {"tenants": []}
    result = cli.fails(1, "invalid_request", "tenants", "create", "Not A Name")
    assert "lowercase" in result.stderr


def test_agents_put_and_list(cli: Cli) -> None:
    cli.ok("tenants", "create", "acme")
    put = cli.ok(
        "agents", "put", "acme", "helpdesk", "--instructions", "Answer IT questions.",
        "--max-steps", "5", "--retrieval-k", "2",
    )  # fmt: skip
    assert "saved agent acme/helpdesk version 1" in put.stdout
    assert "search_documents, finish" in put.stdout
    second = cli.json(
        "agents",
        "put",
        "acme",
        "helpdesk",
        "-i",
        "Answer IT questions briefly.",
        "--tool",
        "finish",
    )["agent"]
    assert second["version"] == 2
    assert second["allowed_tools"] == ["finish"]
    assert second["max_steps"] == 8  # back to the default: put replaces the whole definition
    assert second["parallel_calls"] == 1
    third = cli.json("agents", "put", "acme", "helpdesk", "-i", "Go.", "--parallel-calls", "3")
    assert third["agent"]["parallel_calls"] == 3
    bad = cli.fails(1, "invalid_request", "agents", "put", "acme", "x", "-i", "Go.",
                    "--parallel-calls", "9")  # fmt: skip
    assert "parallel_calls must be 1..8" in bad.stderr

    cli.ok("tenants", "create", "globex")
    cli.ok("agents", "put", "globex", "sales", "-i", "Quote prices.")
    rows = cli.ok("agents", "list").stdout.splitlines()
    assert rows[0].split()[:3] == ["TENANT", "NAME", "VERSION"]
    assert sorted(r.split()[0] + "/" + r.split()[1] for r in rows[1:]) == [
        "acme/helpdesk",
        "globex/sales",
    ]
    only = cli.json("agents", "list", "--tenant", "globex")["agents"]
    assert [(a["tenant"], a["name"], a["version"]) for a in only] == [("globex", "sales", 1)]
    assert only[0]["instructions"] == "Quote prices."


def test_agents_errors(cli: Cli) -> None:
    cli.fails(1, "not_found", "agents", "put", "nobody", "a", "-i", "x")
    cli.fails(1, "not_found", "agents", "list", "--tenant", "nobody")
    cli.ok("tenants", "create", "acme")
    unknown = cli.fails(
        1, "invalid_request", "agents", "put", "acme", "a", "-i", "x", "--tool", "rm"
    )
    assert "unknown tools: rm" in unknown.stderr
    assert cli.ok("agents", "list").stdout == "no agents yet\n"
    missing = cli("agents", "put", "acme", "a")
    assert missing.exit_code == 2
    assert "error[usage]: " in missing.stderr
    assert "--instructions" in missing.stderr
