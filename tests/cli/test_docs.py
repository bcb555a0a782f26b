"""`garrison docs add|list`: good files go in, bad ones are named with their reason."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Cli


def write_files(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    files = {
        "good": folder / "leave.md",
        "plain": folder / "notes.txt",
        "empty": folder / "empty.md",
        "binary": folder / "logo.png",
        "latin1": folder / "legacy.txt",
        "missing": folder / "missing.md",
    }
    files["good"].write_text("```\n# not a heading\n```\n\n## Annual leave\n\nWe get 27 days.\n")
    files["plain"].write_text("# a comment, not a title\nOn-call pays EUR 350 a week.\n")
    files["empty"].write_text("  \n\n")
    files["binary"].write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    files["latin1"].write_bytes("Caf\xe9 menu".encode("latin-1"))
    return files


def test_add_skips_bad_files_and_keeps_the_good(cli: Cli, tmp_path: Path) -> None:
    cli.ok("tenants", "create", "acme")
    files = write_files(tmp_path / "docs")
    args = [str(files[k]) for k in ("good", "missing", "empty", "binary", "latin1", "plain")]
    result = cli("docs", "add", "--tenant", "acme", *args)
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert f"added      {files['good']}: 'Annual leave' (" in out  # heading outside the fence
    assert f"added      {files['plain']}: 'notes.txt'" in out  # plain text: titled by file name
    assert f"skipped    {files['missing']}: file not found" in out
    assert f"skipped    {files['empty']}: empty file" in out
    assert f"skipped    {files['binary']}: binary file, not text" in out
    assert f"skipped    {files['latin1']}: not UTF-8 text" in out
    assert "6 file(s) for tenant acme: 2 added, 0 updated, 0 unchanged, 4 failed" in out
    assert "error[some_files_failed]: 4 of 6 file(s) skipped" in result.stderr

    listed = cli.json("docs", "list", "--tenant", "acme")["documents"]
    assert sorted(d["title"] for d in listed) == ["Annual leave", "notes.txt"]
    assert {d["metadata"]["filename"] for d in listed} == {"leave.md", "notes.txt"}
    table = cli.ok("docs", "list", "-t", "acme").stdout
    assert "Annual leave" in table
    assert table.splitlines()[0].split()[:2] == ["ID", "TITLE"]


def test_add_json_and_idempotence(cli: Cli, tmp_path: Path) -> None:
    cli.ok("tenants", "create", "acme")
    files = write_files(tmp_path / "docs")
    first = cli.json("docs", "add", "-t", "acme", str(files["good"]), "--title", "Leave")
    assert first["added"] == 1
    assert first["failed"] == 0
    assert first["files"][0]["title"] == "Leave"
    assert first["files"][0]["chunks"] >= 1

    again = cli("docs", "add", "-t", "acme", str(files["good"]), str(files["empty"]), "--json")
    assert again.exit_code == 1
    body = json.loads(again.stdout)  # the per-file report is still the one document on stdout
    # The path is the document's key: a new title is a new version of the same document.
    assert (body["added"], body["updated"], body["unchanged"], body["failed"]) == (0, 1, 0, 1)
    assert body["files"][0]["document_id"] == first["files"][0]["document_id"]
    assert body["files"][0]["version"] == 2
    assert body["files"][1] == {
        "path": str(files["empty"]),
        "status": "failed",
        "title": None,
        "document_id": None,
        "version": None,
        "chunks": None,
        "reason": "empty file",
        "code": "unreadable_document",
    }
    assert json.loads(again.stderr)["error"]["code"] == "some_files_failed"

    unchanged = cli.json("docs", "add", "-t", "acme", str(files["good"]))
    assert unchanged["files"][0]["status"] == "unchanged"
    listed = cli.json("docs", "list", "-t", "acme")["documents"]
    assert [(d["title"], d["version"]) for d in listed] == [("Annual leave", 2)]


def test_add_errors(cli: Cli, tmp_path: Path) -> None:
    files = write_files(tmp_path / "docs")
    cli.fails(1, "not_found", "docs", "add", "-t", "nobody", str(files["good"]))
    cli.fails(1, "not_found", "docs", "list", "-t", "nobody")
    cli.ok("tenants", "create", "acme")
    assert cli.ok("docs", "list", "-t", "acme").stdout == "no documents\n"
    two_titles = cli(
        "docs", "add", "-t", "acme", "--title", "X", str(files["good"]), str(files["plain"])
    )
    assert two_titles.exit_code == 2
    assert "error[usage]: " in two_titles.stderr
    no_files = cli("docs", "add", "-t", "acme")
    assert no_files.exit_code == 2
    assert "error[usage]: " in no_files.stderr
