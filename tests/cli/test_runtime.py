"""How the CLI describes where its database is, and what it prints about it."""

from __future__ import annotations

from pathlib import Path

from datastore.settings import DatabaseSettings
from ops.output import clip
from ops.runtime import database_label, redact


def test_redact_hides_only_the_password() -> None:
    assert (
        redact("postgresql://app:s3cret@db:5432/garrison")
        == "postgresql://app:***@db:5432/garrison"
    )
    assert redact("postgresql://app@db/garrison") == "postgresql://app@db/garrison"
    socket_url = "postgresql://postgres:@/garrison?host=/tmp/pg"
    assert redact(socket_url) == socket_url


def test_database_label_says_what_will_happen(tmp_path: Path) -> None:
    external = DatabaseSettings(database_url="postgresql://app:pw@db/g", data_dir=tmp_path)
    assert database_label(external) == "connecting to PostgreSQL at postgresql://app:***@db/g"
    embedded = DatabaseSettings(database_url=None, data_dir=tmp_path)
    pgdata = (tmp_path / "postgres").resolve()
    assert database_label(embedded) == f"creating embedded PostgreSQL 18 in {pgdata} (first start)"
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("18\n")
    assert database_label(embedded) == f"starting embedded PostgreSQL 18 in {pgdata}"
    (pgdata / "postmaster.pid").write_text("1\n")  # pid 1 always exists
    assert database_label(embedded).startswith("attaching to the embedded PostgreSQL 18")


def test_clip() -> None:
    assert clip("a  b\nc", 10) == "a b c"
    assert clip("x" * 12, 10) == "xxxxxxxxxx… (2 more chars)"
