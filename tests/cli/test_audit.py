"""`garrison audit verify|export`, and the CLI's own changes audited under the OS user."""

from __future__ import annotations

import getpass
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from ops.commands import audit as audit_command
from tests.audit_tamper import delete_entry, edit_detail, entry_ids
from tests.cli.conftest import Cli


def populate(cli: Cli) -> None:
    cli.ok("tenants", "create", "acme")
    cli.ok("tenants", "create", "globex")
    cli.ok("agents", "put", "acme", "assistant", "--instructions", "Help.")
    cli.ok("keys", "create", "-t", "acme", "--role", "operator")
    cli.ok("keys", "create", "-t", "globex")


def exported(cli: Cli, *args: str) -> list[dict[str, Any]]:
    result = cli.ok("audit", "export", *args)
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_clis_changes_are_audited_under_the_os_user(cli: Cli) -> None:
    populate(cli)
    lines = exported(cli)
    assert [e["action"] for e in lines] == [
        "tenant.create",
        "tenant.create",
        "agent.put",
        "key.create",
        "key.create",
    ]
    assert {e["actor"] for e in lines} == {f"cli:{getpass.getuser()}"}


def test_verify_reports_an_intact_chain_and_its_head(cli: Cli, database_url: str) -> None:
    populate(cli)
    last = entry_ids(database_url)[-1]
    human = cli.ok("audit", "verify")
    assert "audit chain intact: 5 entries verified" in human.stdout
    report = cli.json("audit", "verify")
    assert report["ok"] is True
    assert report["checked"] == 5
    assert report["broken"] is None
    assert report["head"]["id"] == last
    head = f"{last}:{report['head']['hash']}"
    assert head in human.stdout  # to note down
    assert cli.json("audit", "verify", "--anchor", head)["ok"] is True


def test_verify_of_an_empty_log(cli: Cli) -> None:
    assert "the audit log is empty" in cli.ok("audit", "verify").stdout
    assert cli.json("audit", "verify") == {
        "ok": True,
        "checked": 0,
        "head": None,
        "broken": None,
        "missing": {"code": "audit_entry_missing", "count": 0, "overdue": 0, "first": []},
    }


def test_verify_names_an_edited_entry_and_exits_1(cli: Cli, database_url: str) -> None:
    populate(cli)
    victim = entry_ids(database_url)[3]
    edit_detail(database_url, victim, {"name": "cli", "roles": ["admin"], "prefix": "gk_x"})

    human = cli("audit", "verify")
    assert human.exit_code == 1, human.output
    assert f"error[audit_entry_altered]: audit entry {victim} " in human.stderr
    assert f"BROKEN at entry {victim}" in human.stdout

    as_json = cli("audit", "verify", "--json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert report["broken"]["entry_id"] == victim
    assert report["broken"]["code"] == "audit_entry_altered"
    error = json.loads(as_json.stderr.strip().splitlines()[-1])["error"]
    assert error["code"] == "audit_entry_altered"


def test_verify_names_the_entry_after_a_deleted_one(cli: Cli, database_url: str) -> None:
    populate(cli)
    ids = entry_ids(database_url)
    delete_entry(database_url, ids[2])
    result = cli("audit", "verify")
    assert result.exit_code == 1
    assert f"error[audit_chain_broken]: audit entry {ids[3]} does not follow entry {ids[1]}" in (
        result.stderr
    )


def test_verify_checks_an_anchor(cli: Cli, database_url: str) -> None:
    populate(cli)
    report = cli.json("audit", "verify")
    head = report["head"]
    delete_entry(database_url, head["id"])  # cut short: the chain that is left still holds
    assert cli.json("audit", "verify")["ok"] is True
    result = cli("audit", "verify", "--anchor", f"{head['id']}:{head['hash']}")
    assert result.exit_code == 1
    assert f"error[audit_anchor_mismatch]: anchored audit entry {head['id']} is gone" in (
        result.stderr
    )
    cli.fails(1, "invalid_anchor", "audit", "verify", "--anchor", "12:nothex")


def test_export_streams_the_chain_with_its_hashes(cli: Cli, tmp_path: Path) -> None:
    populate(cli)
    lines = exported(cli)
    assert [e["id"] for e in lines] == sorted(e["id"] for e in lines)
    assert lines[0]["prev_hash"] == "0" * 64
    for before, after in itertools.pairwise(lines):
        assert after["prev_hash"] == before["hash"]
    assert lines[0]["tenant"] == "acme"
    assert lines[0]["detail"] == {"name": "acme"}
    assert set(lines[0]) == {
        "id",
        "created_at",
        "tenant_id",
        "tenant",
        "actor",
        "action",
        "object_type",
        "object_id",
        "detail",
        "prev_hash",
        "hash",
    }

    globex = exported(cli, "--tenant", "globex")
    assert [(e["action"], e["tenant"]) for e in globex] == [
        ("tenant.create", "globex"),
        ("key.create", "globex"),
    ]
    assert exported(cli, "--since", "2999-01-01") == []
    assert len(exported(cli, "--since", "2000-01-01", "--format", "jsonl")) == 5

    target = tmp_path / "audit.jsonl"
    result = cli.ok("audit", "export", "-o", str(target))
    assert result.stdout == ""
    assert f"exported 5 audit entries (jsonl) to {target}" in result.stderr
    assert [json.loads(line) for line in target.read_text().splitlines()] == lines
    assert not (tmp_path / "audit.jsonl.partial").exists()


@pytest.mark.parametrize(
    ("args", "exit_code", "code"),
    [
        (["--since", "yesterday"], 2, "invalid_since"),
        (["--tenant", "nobody"], 1, "not_found"),
        (["-o", "{tmp}/no/such/dir.jsonl"], 1, "output_unwritable"),
        (["--format", "csv"], 2, "usage"),
    ],
)
def test_export_refuses_bad_arguments(
    cli: Cli, tmp_path: Path, args: list[str], exit_code: int, code: str
) -> None:
    populate(cli)
    result = cli("audit", "export", *(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert result.exit_code == exit_code, result.output
    assert f"error[{code}]: " in result.stderr
    assert result.stdout == ""


def test_big_logs_show_progress(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(cli)
    assert "entries ..." not in cli.ok("audit", "verify").stderr  # a small log: no progress
    # A "big" log: progress every 2 entries, read 2 at a time.
    monkeypatch.setattr(audit_command, "PROGRESS_EVERY", 2)
    monkeypatch.setattr(audit_command, "PAGE", 2)
    result = cli.ok("audit", "export", "-o", str(tmp_path / "audit.jsonl"))
    progress = [line for line in result.stderr.splitlines() if line.endswith("...")]
    assert progress == ["exported 2 of 5 entries ...", "exported 4 of 5 entries ..."]
    verified = cli.ok("audit", "verify", "--json")
    assert "verified 2 entries ...\nverified 4 entries ..." in verified.stderr
    assert json.loads(verified.stdout)["checked"] == 5
