"""Tampering with the audit log as an attacker with database superuser rights would.

The append-only trigger refuses UPDATE and DELETE to the application; someone who owns the
database can switch it off. These helpers do exactly that, for tests that prove the hash chain
still gives the tampering away.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from datastore.repos.audit import GENESIS, entry_fields, entry_hash

TRIGGER = "audit_log_append_only"


@contextmanager
def trigger_off(url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(f"ALTER TABLE audit_log DISABLE TRIGGER {TRIGGER}")
        try:
            yield conn
        finally:
            conn.execute(f"ALTER TABLE audit_log ENABLE TRIGGER {TRIGGER}")


def entry_ids(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM audit_log ORDER BY id").fetchall()]


def edit_detail(url: str, entry_id: int, detail: dict[str, Any]) -> None:
    with trigger_off(url) as conn:
        conn.execute(
            "UPDATE audit_log SET detail = %s::jsonb WHERE id = %s", (json.dumps(detail), entry_id)
        )


def delete_entry(url: str, entry_id: int) -> None:
    with trigger_off(url) as conn:
        conn.execute("DELETE FROM audit_log WHERE id = %s", (entry_id,))


def rewrite_from(url: str, entry_id: int, actor: str) -> None:
    """Change the actor of `entry_id` and re-hash it and every later entry, so the chain holds
    again: what only an anchor noted down earlier can reveal."""
    with trigger_off(url) as conn:
        conn.execute("UPDATE audit_log SET actor = %s WHERE id = %s", (actor, entry_id))
        rows = conn.execute("SELECT * FROM audit_log ORDER BY id").fetchall()
        prev = GENESIS
        for row in rows:
            if row["id"] >= entry_id:
                fields = entry_fields(
                    tenant_id=row["tenant_id"],
                    actor=row["actor"],
                    action=row["action"],
                    object_type=row["object_type"],
                    object_id=row["object_id"],
                    detail=row["detail"],
                    created_at=row["created_at"],
                )
                new = entry_hash(prev, fields)
                conn.execute(
                    "UPDATE audit_log SET prev_hash = %s, hash = %s WHERE id = %s",
                    (prev, new, row["id"]),
                )
                prev = new
            else:
                prev = row["hash"]
