"""Migrations from empty, tenant-scoped vector search, idempotent ingestion, the audit chain."""

from __future__ import annotations

import threading

import psycopg
import pytest

from agent.runtime import Services
from datastore import migrate
from datastore.engine import create_async
from datastore.errors import DatabaseUnavailable, translated
from datastore.repos.audit import GENESIS, entry_hash
from serving.testing.scripted import ScriptedModelServer, deterministic_embedding
from tests.conftest import PgCluster, TenantFixture, create_database, drop_database


def test_migrations_from_empty_database(pg_cluster: PgCluster) -> None:
    name = create_database(pg_cluster, migrated=False)
    url = pg_cluster.url_for(name)
    try:
        before = migrate.status(url)
        assert before.current is None
        assert before.pending[:2] == ("0001", "0002")
        errors: list[BaseException] = []

        def upgrade() -> None:
            try:
                migrate.upgrade(url)
            except BaseException as exc:
                errors.append(exc)

        # Two processes starting at once: the advisory lock makes one migrate, the other wait.
        threads = [threading.Thread(target=upgrade) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        after = migrate.status(url)
        assert after.up_to_date
        assert after.current == before.pending[-1]
        with psycopg.connect(url) as conn:
            tables = {
                r[0]
                for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")
            }
            assert {
                "tenants",
                "api_keys",
                "agents",
                "runs",
                "steps",
                "documents",
                "chunks",
                "audit_log",
                "model_deployments",
            } <= tables
            ext = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname='vector'"
            ).fetchone()
            assert ext is not None
            assert ext[0].startswith("0.8")
            index = conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE indexname='ix_chunks_embedding_hnsw'"
            ).fetchone()
            assert index is not None
            assert "hnsw" in index[0]
            assert "halfvec_cosine_ops" in index[0]
        migrate.downgrade(url, "base")
        assert migrate.status(url).current is None
        assert migrate.upgrade(url).up_to_date
    finally:
        drop_database(pg_cluster, name)


async def test_vector_search_never_crosses_tenants(
    services: Services, acme: TenantFixture, globex: TenantFixture
) -> None:
    text = "The secret launch code for project falcon is stored in vault seven."
    await services.documents.ingest(acme.tenant.id, title="Falcon", text=text)
    await services.documents.ingest(globex.tenant.id, title="Falcon", text=text + " Globex copy.")
    query = deterministic_embedding("falcon launch code vault")
    for fx in (acme, globex):
        hits = await services.store.documents.search_chunks(fx.tenant.id, query, 10)
        assert len(hits) == 1
        doc = await services.documents.get(hits[0].document_id, fx.tenant.id)
        assert doc.tenant_id == fx.tenant.id
    acme_hits = await services.store.documents.search_chunks(acme.tenant.id, query, 10)
    assert "Globex copy" not in acme_hits[0].content


async def test_filtered_search_returns_k_rows_when_they_exist(
    services: Services, acme: TenantFixture, globex: TenantFixture
) -> None:
    # Most rows belong to another tenant: without iterative scans the HNSW index would stop early.
    for i in range(60):
        await services.documents.ingest(
            globex.tenant.id, title=f"g{i}", text=f"globex note {i} about widgets"
        )
    for i in range(5):
        await services.documents.ingest(
            acme.tenant.id, title=f"a{i}", text=f"acme memo {i} on gadgets"
        )
    hits = await services.store.documents.search_chunks(
        acme.tenant.id, deterministic_embedding("widgets"), 5
    )
    assert len(hits) == 5
    assert all(h.title.startswith("a") for h in hits)


async def test_ingestion_is_idempotent_by_content(
    services: Services,
    acme: TenantFixture,
    globex: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    doc, created = await services.documents.ingest(acme.tenant.id, title="T", text="Body text.")
    embed_calls = sum(1 for r in scripted_model.requests if r.path.endswith("/embeddings"))
    again, created_again = await services.documents.ingest(
        acme.tenant.id, title="T", text="Body text."
    )
    assert created
    assert not created_again
    assert again.id == doc.id
    # The duplicate was recognised before any embedding work.
    assert sum(1 for r in scripted_model.requests if r.path.endswith("/embeddings")) == embed_calls
    # The same content in another tenant is that tenant's own document.
    other, other_created = await services.documents.ingest(
        globex.tenant.id, title="T", text="Body text."
    )
    assert other_created
    assert other.id != doc.id


async def test_audit_log_is_hash_chained_and_append_only(
    services: Services, acme: TenantFixture, database_url: str
) -> None:
    await services.keys.revoke(acme.principal.key_id, actor="test")
    entries = list(reversed(await services.store.audit.list_entries(None, 100)))
    assert [e.action for e in entries] == ["tenant.create", "agent.put", "key.create", "key.revoke"]
    prev = GENESIS
    for e in entries:
        fields = {
            "tenant_id": str(e.tenant_id) if e.tenant_id else None,
            "actor": e.actor,
            "action": e.action,
            "object_type": e.object_type,
            "object_id": e.object_id,
            "detail": e.detail,
            "created_at": e.created_at.isoformat() if e.created_at else None,
        }
        assert e.hash == entry_hash(prev, fields)
        prev = e.hash
    with psycopg.connect(database_url) as conn, pytest.raises(psycopg.errors.RaiseException):
        conn.execute("UPDATE audit_log SET actor = 'mallory'")


async def test_unknown_database_is_reported_as_unavailable(services: Services) -> None:
    engine = create_async(services.store.url.replace("/t_", "/missing_"), connect_timeout_s=1)
    try:
        with pytest.raises(DatabaseUnavailable):
            async with translated(), engine.connect():
                pass
    finally:
        await engine.dispose()
