"""`garrison docs add` on folders of mixed formats and bad files; show, search, delete, reindex."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Cli
from tests.pdfs import minimal_pdf

PAGE = """<html><head><title>Returns</title></head><body>
<h1>Returns</h1><p>Goods come back within 30 days.</p>
<h2>Refunds</h2><p>Refunds take five working days.</p></body></html>"""


def build_folder(root: Path) -> dict[str, Path]:
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    files = {
        "md": root / "guide.md",
        "html": root / "sub" / "returns.html",
        "pdf": root / "sub" / "prices.pdf",
        "corrupt": root / "broken.pdf",
        "empty": root / "empty.txt",
        "huge": root / "huge.txt",
        "binary": root / "data.txt",
    }
    files["md"].write_text("# Guide\n\n## Shipping\n\nParcels leave on Mondays.\n")
    files["html"].write_text(PAGE)
    files["pdf"].write_bytes(minimal_pdf(["Part XK-4471-B costs 42 euros."], title="Price list"))
    files["corrupt"].write_bytes(minimal_pdf(["lost"])[:120])
    files["empty"].write_text("")
    with files["huge"].open("wb") as fh:  # 50 MB without writing 50 MB: a sparse file
        fh.truncate(50 * 1024 * 1024)
    files["binary"].write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    (root / "notes.docx").write_bytes(b"PK\x03\x04")  # not a format Garrison reads: ignored
    (root / ".git" / "HEAD.md").write_text("# hidden")  # hidden folders are not walked
    return files


def test_a_folder_goes_in_and_each_bad_file_says_why(cli: Cli, tmp_path: Path) -> None:
    cli.ok("tenants", "create", "acme")
    files = build_folder(tmp_path / "docs")
    result = cli("docs", "add", "-t", "acme", str(tmp_path / "docs"), "--tag", "kb", "--progress")
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert f"added      {files['md']}: 'Guide' (v1, 1 chunk(s))" in out
    assert f"added      {files['html']}: 'Returns' (v1, 2 chunk(s))" in out
    assert f"added      {files['pdf']}: 'Price list' (v1, 1 chunk(s))" in out
    assert f"skipped    {files['corrupt']}: corrupt PDF (" in out
    assert f"skipped    {files['empty']}: empty file" in out
    assert f"skipped    {files['huge']}: file is too large (50.0 MiB; the limit is 20 MiB)" in out
    assert f"skipped    {files['binary']}: binary file, not text" in out
    assert "7 file(s) for tenant acme: 3 added, 0 updated, 0 unchanged, 4 failed" in out
    assert "1 other file(s) ignored" in out
    assert "error[some_files_failed]: 4 of 7 file(s) skipped" in result.stderr
    assert "progress: 7/7 file(s), 4 failed, 4 chunk(s) stored" in result.stderr

    listed = cli.json("docs", "list", "-t", "acme")["documents"]
    assert sorted(d["title"] for d in listed) == ["Guide", "Price list", "Returns"]
    assert all(d["tags"] == ["kb"] for d in listed)
    pdf = next(d for d in listed if d["title"] == "Price list")
    assert pdf["metadata"] == {
        "filename": "prices.pdf",
        "bytes": pdf["metadata"]["bytes"],
        "format": "pdf",
    }
    assert pdf["key"] == str(files["pdf"].resolve())

    # Unchanged files are recognised; nothing is re-embedded or re-versioned.
    again = cli.json(
        "docs", "add", "-t", "acme", str(files["md"]), str(files["pdf"]), "--tag", "kb"
    )
    assert (again["added"], again["updated"], again["unchanged"]) == (0, 0, 2)
    # New labels alone make a new version (the chunks stay).
    relabelled = cli.json("docs", "add", "-t", "acme", str(files["md"]), "--tag", "public")
    assert relabelled["files"][0]["status"] == "updated"
    assert relabelled["files"][0]["version"] == 2


def test_show_search_delete_and_reindex(cli: Cli, tmp_path: Path) -> None:
    cli.ok("tenants", "create", "acme")
    files = build_folder(tmp_path / "docs")
    cli.ok("docs", "add", "-t", "acme", str(files["html"]), "--meta", "team=support")
    cli.ok(
        "docs", "add", "-t", "acme", str(files["pdf"]), "--meta", "team=sales", "--key", "prices"
    )
    docs = {d["title"]: d for d in cli.json("docs", "list", "-t", "acme")["documents"]}
    returns_id = docs["Returns"]["id"]

    shown = cli.ok("docs", "show", returns_id, "-t", "acme").stdout
    assert "key:" in shown
    assert "#1 [Returns > Refunds] ## Refunds Refunds take five working days." in shown
    as_json = cli.json("docs", "show", returns_id, "-t", "acme")
    assert [c["heading"] for c in as_json["chunks"]] == ["Returns", "Returns > Refunds"]

    hits = cli.json("search", "XK-4471-B price", "-t", "acme", "-k", "1")["hits"]
    assert [h["title"] for h in hits] == ["Price list"]
    assert "keyword" in hits[0]["matched_by"]
    scoped = cli.json("search", "refunds", "-t", "acme", "--meta", "team=sales", "-k", "5")
    assert [h["title"] for h in scoped["hits"]] == ["Price list"]
    assert scoped["search"]["strategy"] == "exact"
    human = cli.ok("search", "refunds", "-t", "acme", "--mode", "vector").stdout
    assert "] 0." in human
    assert "Returns [Returns > Refunds] (v1, chunk 1, vector)" in human
    assert "(exact scan over ~" in human

    refused = cli("docs", "delete", returns_id, "-t", "acme")  # no terminal to confirm on
    assert refused.exit_code != 0
    assert "error[confirmation_required]" in refused.stderr
    deleted = cli.json("docs", "delete", returns_id, "-t", "acme", "-y")
    assert deleted["deleted"]["id"] == returns_id
    cli.fails(1, "not_found", "docs", "show", returns_id, "-t", "acme")
    assert cli.json("search", "refunds", "-t", "acme", "--meta", "team=support")["hits"] == []

    rebuilt = cli.json("reindex")
    # Too few chunks for any tenant to be worth calibrating (GARRISON_SEARCH_TUNE_MIN_CHUNKS).
    assert rebuilt == {"rebuilt": True, "was_missing": False, "calibrated": []}
    assert json.loads(cli.ok("docs", "list", "-t", "acme", "--json").stdout)["documents"]
