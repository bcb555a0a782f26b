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
