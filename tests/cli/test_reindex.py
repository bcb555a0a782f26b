"""`garrison reindex [--reembed [-t TENANT]]`: the vector index, and re-embedding stored chunks."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import Cli


def test_reembed_embeds_every_chunk_again_then_rebuilds_the_index(cli: Cli, tmp_path: Path) -> None:
    for tenant in ("acme", "globex"):
        cli.ok("tenants", "create", tenant)
    (tmp_path / "leave.md").write_text("# Leave\n\n## Days\n\n27 days.\n\n## Carry over\n\nFive.\n")
    (tmp_path / "pay.md").write_text("# Pay\n\nPaid monthly.\n")
    cli.ok("docs", "add", "-t", "acme", str(tmp_path))
    cli.ok("docs", "add", "-t", "globex", str(tmp_path / "pay.md"))

    one = cli.json("reindex", "--reembed", "-t", "acme")
    assert one["rebuilt"] is True
    reembedded = one["reembedded"]
    assert (reembedded["documents"], reembedded["chunks"], reembedded["skipped"]) == (2, 3, 0)
    assert reembedded["model"] == "embed"

    everyone = cli.ok("reindex", "--reembed", "--progress")
    assert "re-embedded 4 chunk(s) of 3 document(s)" in everyone.stdout
    assert "rebuilding the vector index ... ok" in everyone.stdout
    assert "progress: 3 document(s), 4 chunk(s) re-embedded" in everyone.stderr

    hits = cli.json("search", "how many days", "-t", "acme", "-k", "1", "--mode", "vector")
    assert hits["hits"][0]["title"] == "Leave"


def test_a_tenant_needs_reembed_and_must_exist(cli: Cli) -> None:
    alone = cli("reindex", "-t", "acme")
    assert alone.exit_code == 2
    assert "--reembed" in alone.output
    cli.fails(1, "not_found", "reindex", "--reembed", "-t", "nobody")


def test_calibrate_measures_a_tenant_and_reindex_measures_every_large_one(
    cli: Cli, tmp_path: Path
) -> None:
    handbook(cli, tmp_path)

    [found] = cli.json("calibrate", "-t", "acme", "--sample", "20")
    assert found["tenant"] == "acme"
    measured = found["calibration"]
    assert measured["chunks"] >= 40
    assert measured["sample"] == 20
    assert measured["recall"] >= measured["target"]
    assert measured["ef_search"] == measured["ladder"][-1]["ef_search"]
    human = cli.ok("calibrate", "-t", "acme").stdout
    assert f"acme: ef_search {measured['ef_search']}, recall@10 " in human
    assert "target 0.96 reached" in human

    # Without --tenant: only tenants past GARRISON_SEARCH_TUNE_MIN_CHUNKS (1,000 by default).
    assert cli.json("calibrate") == []
    assert "no tenant has enough chunks" in cli.ok("calibrate").stdout
    small = Cli({**cli.env, "GARRISON_SEARCH_TUNE_MIN_CHUNKS": "11"})
    rebuilt = small.json("reindex")
    assert [c["tenant"] for c in rebuilt["calibrated"]] == ["acme"]
    assert small.json("reindex", "--no-calibrate").get("calibrated") is None


def test_calibrate_measures_with_the_questions_of_a_file(cli: Cli, tmp_path: Path) -> None:
    handbook(cli, tmp_path)
    asked = tmp_path / "questions.txt"
    asked.write_text("\n".join(f"where does form F-{i:03d} go?" for i in range(25)) + "\n\n")
    [found] = cli.json("calibrate", "-t", "acme", "--questions", str(asked))
    assert found["calibration"]["source"] == "questions"
    assert found["calibration"]["sample"] == 25

    few = tmp_path / "few.txt"
    few.write_text("where does form F-001 go?\n")
    refused = cli("calibrate", "-t", "acme", "--questions", str(few))
    assert refused.exit_code == 2
    assert "at least 20" in refused.output
    alone = cli("calibrate", "--questions", str(asked))
    assert alone.exit_code == 2
    assert "needs --tenant" in alone.output


def test_calibrate_refuses_bad_input(cli: Cli) -> None:
    cli.fails(1, "not_found", "calibrate", "-t", "nobody")
    for bad in (("--target", "1.5"), ("--sample", "3")):
        refused = cli("calibrate", *bad)
        assert refused.exit_code == 2
        assert bad[0] in refused.output


def handbook(cli: Cli, folder: Path) -> None:
    """Tenant acme with one document of 40 sections: enough chunks to calibrate."""
    cli.ok("tenants", "create", "acme")
    sections = (
        f"## Topic {i}\n\nRule {i}: form F-{i:03d} goes to desk {i % 7}." for i in range(40)
    )
    (folder / "handbook.md").write_text("# Handbook\n\n" + "\n\n".join(sections) + "\n")
    cli.ok("docs", "add", "-t", "acme", str(folder / "handbook.md"))
